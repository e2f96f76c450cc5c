"""A protocol-level WS-Management (WinRM) server on loopback, for testing the WinRM transport.

No WinRM server exists for Linux. This one speaks the SOAP exchanges pywinrm
uses (Create shell, Command, Send stdin, Receive, Signal, Delete) over HTTP
with Basic authentication, and hands each command line (and what was sent to
its stdin) to a Python function standing in for the guest. It proves the wire
format and the transport's handling of it (shells, streams, exit codes, 401s,
lost connections), not Windows behaviour, except for the limits below, which
it enforces as Windows does (each is a row in docs/windows-facts.md):

- a request larger than MaxEnvelopeSizekb (500 KiB by default on current
  Windows) is refused with HTTP 413 and nothing else happens;
- WinRS runs every command line through cmd.exe: a line longer than cmd.exe's
  8191 characters is not run; the command ends with exit code 1 and
  "The command line is too long." on stderr;
- a Receive for a command that is still running waits, then answers the
  w:TimedOut fault (WSManFault code 2150858793) that pywinrm turns into
  WinRMOperationTimeoutError. Windows waits up to the client's
  OperationTimeout (pywinrm: 20 s); this double waits ``receive_wait``.
"""

from __future__ import annotations

import base64
import threading
import time
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
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
ACTION_BASE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
#: The guest: (command line, bytes sent to its stdin) -> (stdout, stderr, exit code), or None while it runs on.
Guest = Callable[[str, bytes], "tuple[bytes, bytes, int] | None"]

CMD_MAX_CHARS = 8191  # cmd.exe's longest command line
CMD_TOO_LONG = (b"", b"The command line is too long.\r\n", 1)  # what cmd.exe answers, and its exit code
DEFAULT_MAX_ENVELOPE_KB = 500  # MaxEnvelopeSizekb on Windows Server 2012 R2 and later, Windows 10/11
OPERATION_TIMED_OUT = 2150858793  # WSManFault code of a Receive whose command produced nothing in time


@dataclass
class Command:
    line: str
    stdin: bytearray = field(default_factory=bytearray)
    stdin_ended: bool = False
    sends: int = 0
    result: tuple[bytes, bytes, int] | None = None


@dataclass
class ServerState:
    username: str
    password: str
    guest: Guest
    max_envelope_kb: int = DEFAULT_MAX_ENVELOPE_KB
    receive_wait: float = 0.2
    shells: set[str] = field(default_factory=set)
    commands: dict[str, Command] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # every command line received, run or not
    largest_request: int = 0  # bytes of the largest request body accepted
    refused_requests: int = 0  # requests answered 413
    drop_next: int = 0  # close this many connections without answering (connection loss)
    drop_action: str | None = None  # only drop requests of this action (e.g. "Send")


def _envelope(relates_to: str, action: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
        f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _timed_out_fault(relates_to: str) -> bytes:
    body = (
        f"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:TimedOut</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">The WS-Management service cannot complete the operation within the time '
        f"specified in OperationTimeout.</s:Text></s:Reason><s:Detail>"
        f'<f:WSManFault xmlns:f="{NS["f"]}" Code="{OPERATION_TIMED_OUT}" Machine="localhost"><f:Message/></f:WSManFault>'
        f"</s:Detail></s:Fault>"
    )
    return _envelope(relates_to, "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", body)


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

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

        def _drop(self, action: str) -> bool:
            with lock:
                if not state.drop_next or (state.drop_action is not None and not action.endswith("/" + state.drop_action)):
                    return False
                state.drop_next -= 1
            self.close_connection = True
            self.connection.shutdown(2)
            return True

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            expected = "Basic " + base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._reply(401, headers={"WWW-Authenticate": 'Basic realm="WSMAN"'})
                return
            if len(raw) > state.max_envelope_kb * 1024:
                with lock:
                    state.refused_requests += 1
                self.close_connection = True
                self._reply(413)
                return
            root = ET.fromstring(raw)
            action = root.findtext("s:Header/a:Action", namespaces=NS) or ""
            if self._drop(action):
                return
            message_id = root.findtext("s:Header/a:MessageID", namespaces=NS) or ""
            shell = next((n.text for n in root.iter(f"{{{NS['w']}}}Selector") if n.get("Name") == "ShellId"), None)
            with lock:
                state.requests.append(action.rsplit("/", 1)[-1])
                state.largest_request = max(state.largest_request, len(raw))
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
                entry = Command(line)
                if len(line) > CMD_MAX_CHARS:
                    entry.result = CMD_TOO_LONG  # cmd.exe refuses it: the guest never sees it
                with lock:
                    state.lines.append(line)
                    state.commands[command_id] = entry
                body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
            elif action == ACTION_BASE + "Send":
                stream = root.find("s:Body/rsp:Send/rsp:Stream", NS)
                if stream is None or stream.get("Name") != "stdin" or stream.get("CommandId") not in state.commands:
                    self._reply(400)
                    return
                entry = state.commands[stream.get("CommandId", "")]
                entry.stdin += base64.b64decode(stream.text or "")
                entry.sends += 1
                entry.stdin_ended = entry.stdin_ended or stream.get("End", "false").lower() == "true"
                body = "<rsp:SendResponse/>"
            elif action == ACTION_BASE + "Receive":
                stream = root.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
                command_id = stream.get("CommandId", "") if stream is not None else ""
                entry = state.commands[command_id]
                if entry.result is None and (entry.stdin_ended or not entry.sends):
                    entry.result = state.guest(entry.line, bytes(entry.stdin))
                if entry.result is None:  # still running (or waiting for the rest of its stdin)
                    time.sleep(state.receive_wait)
                    self._reply(500, _timed_out_fault(message_id))
                    return
                stdout, stderr, code = entry.result
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

    def __init__(self, username: str, password: str, guest: Guest, *, max_envelope_kb: int = DEFAULT_MAX_ENVELOPE_KB) -> None:
        self.state = ServerState(username, password, guest, max_envelope_kb=max_envelope_kb)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WsmanServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
