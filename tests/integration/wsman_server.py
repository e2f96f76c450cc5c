"""A protocol-level WS-Management (WinRM) server on loopback, for testing the WinRM transport.

No WinRM server exists for Linux. This one speaks the SOAP exchanges pywinrm
uses (Create shell, Command, Receive, Signal, Delete) over HTTP with Basic
authentication, and hands each command line to a Python function standing in
for the guest. It proves the wire format and the transport's handling of it
(shells, streams, exit codes, 401s, lost connections), not Windows behaviour.
"""

from __future__ import annotations

import base64
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
ACTION_BASE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
Guest = Callable[[str], tuple[bytes, bytes, int]]


@dataclass
class ServerState:
    username: str
    password: str
    guest: Guest
    shells: set[str] = field(default_factory=set)
    commands: dict[str, tuple[bytes, bytes, int]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    drop_next: int = 0  # close this many connections without answering (connection loss)


def _envelope(relates_to: str, action: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
        f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
            return

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if state.drop_next:
                state.drop_next -= 1
                self.close_connection = True
                self.connection.shutdown(2)
                return
            expected = "Basic " + base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._reply(401, headers={"WWW-Authenticate": 'Basic realm="WSMAN"'})
                return
            root = ET.fromstring(raw)
            action = root.findtext("s:Header/a:Action", namespaces=NS) or ""
            message_id = root.findtext("s:Header/a:MessageID", namespaces=NS) or ""
            shell = next((n.text for n in root.iter(f"{{{NS['w']}}}Selector") if n.get("Name") == "ShellId"), None)
            state.requests.append(action.rsplit("/", 1)[-1])
            if action.endswith("transfer/Create"):
                shell_id = str(uuid.uuid4()).upper()
                state.shells.add(shell_id)
                body = (
                    f"<w:ResourceCreated><a:Address>http://localhost/wsman</a:Address><a:ReferenceParameters>"
                    f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
                    f"</a:ReferenceParameters></w:ResourceCreated><rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId></rsp:Shell>"
                )
            elif shell not in state.shells:
                self._reply(500, _envelope(message_id, "fault", "<s:Fault><s:Reason><s:Text>unknown shell</s:Text></s:Reason></s:Fault>"))
                return
            elif action == ACTION_BASE + "Command":
                command = root.findtext("s:Body/rsp:CommandLine/rsp:Command", namespaces=NS) or ""
                arguments = root.findtext("s:Body/rsp:CommandLine/rsp:Arguments", namespaces=NS)
                line = f"{command} {arguments}" if arguments else command
                command_id = str(uuid.uuid4()).upper()
                state.commands[command_id] = state.guest(line)
                body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
            elif action == ACTION_BASE + "Receive":
                stream = root.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
                command_id = stream.get("CommandId", "") if stream is not None else ""
                stdout, stderr, code = state.commands[command_id]
                streams = "".join(
                    f'<rsp:Stream Name="{name}" CommandId="{command_id}">{base64.b64encode(data).decode()}</rsp:Stream>'
                    for name, data in (("stdout", stdout), ("stderr", stderr))
                    if data
                )
                body = (
                    f"<rsp:ReceiveResponse>{streams}"
                    f'<rsp:CommandState CommandId="{command_id}" State="{ACTION_BASE}CommandState/Done">'
                    f"<rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"
                )
            elif action == ACTION_BASE + "Signal":
                body = "<rsp:SignalResponse/>"
            elif action.endswith("transfer/Delete"):
                state.shells.discard(shell or "")
                body = ""
            else:
                self._reply(400)
                return
            self._reply(200, _envelope(message_id, action + "Response", body))

    return Handler


class WsmanServer:
    """The server in a thread on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, username: str, password: str, guest: Guest) -> None:
        self.state = ServerState(username, password, guest)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WsmanServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
