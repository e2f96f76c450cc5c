"""Command line: ``python -m harness run [PATHS...] [--guest wine] [--out DIR] [--drivers DIR]``.

Exit status: 0 all scenarios passed, 1 any did not, 2 bad input or configuration,
130 interrupted (reports of the finished scenarios are still written).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from harness.config import Settings, default_state_dir, project_root
from harness.errors import ConfigError, GuestError, HarnessError, ScenarioError
from harness.guests import GUESTS, open_lanes
from harness.image.answer import ImageOptions
from harness.runner import ScenarioResult
from harness.scenario.loader import LoadedScenario, discover, load_scenario
from harness.suite import Suite, SuiteResult, expand, load_history, parse_shard, save_history, select_shard

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _guest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guest", default="wine", choices=GUESTS, help="where the drivers run (default: wine, the embedded guest)")
    parser.add_argument("--config", type=Path, help="configuration of the libvirt guest (default: harness.yaml)")
    parser.add_argument("-j", "--jobs", type=int, help="scenarios at once, each on a guest of its own (default: the number of CPU cores)")
    parser.add_argument(
        "--no-warm", action="store_true", help="start each guest when its scenario starts (default: the next one starts meanwhile)"
    )
    parser.add_argument(
        "--image", action="append", metavar="NAME", help="run on this golden image of the configuration's images: (repeatable; "
        "default: every one, an image matrix)",
    )  # fmt: skip
    parser.add_argument(
        "--symbols",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="another folder with the drivers' symbol files (X.debug with DWARF, X.map) to name crash and hang frames; "
        "the drivers folder itself is always searched first (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Windows kernel-driver integration test harness.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run scenarios and write reports")
    run.add_argument("paths", nargs="*", type=Path, help="scenario files or folders (default: scenarios/)")
    _guest_options(run)
    run.add_argument("--out", type=Path, help="report folder (default: build/reports)")
    run.add_argument("--drivers", type=Path, help="folder of built driver images (default: build/drivers)")
    run.add_argument("-v", "--verbose", action="store_true", help="show every step")
    run.add_argument("--shard", metavar="K/N", help="run only shard K of N (deterministic; for a CI matrix), e.g. 2/4")
    run.add_argument(
        "--keep-failed",
        action="store_true",
        help="VM guest: hold a failed, crashed or hung VM paused with its kernel debugger link on a loopback TCP port, print "
        "the WinDbg/kd command line to attach, and wait for Enter before going on",
    )
    compare = commands.add_parser("compare", help="run two driver builds on the same scenarios and report what changed")
    compare.add_argument("paths", nargs="*", type=Path, help="scenario files or folders (default: scenarios/)")
    compare.add_argument("--baseline", type=Path, required=True, help="folder of the baseline build's driver images")
    compare.add_argument("--candidate", type=Path, required=True, help="folder of the candidate build's driver images")
    _guest_options(compare)
    compare.add_argument("--out", type=Path, help="report folder (default: build/compare)")
    report = commands.add_parser("report", help="reports of finished runs")
    report_commands = report.add_subparsers(dest="report_command", required=True)
    merge = report_commands.add_parser(
        "merge",
        help="join the reports of several runs (CI shards) into one",
        description="Reads each folder's scenarios/*/result.json, copies every scenario's folder (raw logs, dumps) into OUT, "
        "and writes one JUnit XML and one HTML report for all of them.",
    )
    merge.add_argument("dirs", nargs="+", type=Path, help="report folders of the runs (each with scenarios/*/result.json)")
    merge.add_argument("--out", type=Path, required=True, help="folder for the merged report")
    image = commands.add_parser("image", help="the Windows golden image")
    image_commands = image.add_subparsers(dest="image_command", required=True)
    build = image_commands.add_parser(
        "build",
        help="install Windows unattended from an ISO into a new golden image",
        description=(
            "Installs Windows from your ISO in a libvirt domain with the test VM's hardware (UEFI without Secure Boot, SATA; "
            "a TPM for Windows 11; no network), with a generated autounattend.xml and first-logon script (see `image answer`), "
            "waits until Windows shuts down, and writes IMAGE.manifest.json with the settings the script verified. "
            "The Administrator password comes from an environment variable, never from the command line."
        ),
    )
    build.add_argument("--iso", type=Path, help="the Windows installation ISO (yours; it cannot be shipped); required")
    build.add_argument(
        "--out", type=Path, default=Path("vm-images/win10.qcow2"), help="the qcow2 image to create (default vm-images/win10.qcow2)"
    )
    _image_options(build)
    build.add_argument("--disk-size", default="64G", help="virtual disk size (default 64G)")
    build.add_argument("--memory-mib", type=int, default=4096, help="memory during the install (default 4096)")
    build.add_argument("--vcpus", type=int, default=2, help="virtual CPUs (default 2)")
    build.add_argument("--timeout", default="3h", help="give up after this long (default 3h)")
    build.add_argument("--uri", default="qemu:///system", help="libvirt URI (default qemu:///system)")
    answer = image_commands.add_parser(
        "answer",
        help="write autounattend.xml and the first-logon script (what `image build` puts on the answer ISO), install nothing",
        description=(
            "Writes into --out exactly what `image build` puts on the answer ISO: autounattend.xml (the edition and its key, "
            "no OOBE, device encryption off, Administrator autologon once), kcb-firstlogon.ps1 (upload folder; WinRM, and "
            "OpenSSH with --ssh, each with an inbound firewall rule on every network profile; test-signing; serial kernel "
            "debugging on COM1; Debug Print Filter; small memory dumps with automatic restart; the test certificate; Windows "
            "Update and Defender sample submission off; every setting checked and reported as ok/FAILED on every serial port), "
            "the test certificate and the OpenSSH installer. The answer file holds the Administrator password in clear, as "
            "Windows Setup requires: it is written readable by its owner only."
        ),
    )
    answer.add_argument("--out", type=Path, required=True, help="folder to write the files into (created)")
    _image_options(answer)
    sign = commands.add_parser("sign", help="test-sign driver images (openssl certificate + osslsigncode)")
    sign.add_argument("images", nargs="+", type=Path, help=".sys files, signed in place")
    sign.add_argument("--cert-dir", type=Path, help="where the test certificate lives (default: build/signing)")
    kd = commands.add_parser("kd", help="kernel-debugger (KDCOM) tools")
    kd_commands = kd.add_subparsers(dest="kd_command", required=True)
    replay = kd_commands.add_parser(
        "replay",
        help="decode a raw KD capture offline",
        description="Prints each kernel-log line exactly (tabs kept) and each debugger event on a line starting with '#kd '.",
    )
    replay.add_argument("raw", type=Path, help="a raw capture (kd-raw.log, or a QEMU chardev logfile)")
    return parser


def _image_options(parser: argparse.ArgumentParser) -> None:
    """The options that shape the answer file and the first-logon script (shared by `image build` and `image answer`)."""
    parser.add_argument(
        "--edition", default="Windows 10 Pro", help="image name in install.wim (default 'Windows 10 Pro'; e.g. 'Windows 11 Pro')"
    )
    parser.add_argument("--password-env", default="KCB_GUEST_PASSWORD", help="environment variable holding the Administrator password")
    parser.add_argument("--locale", default="en-US", help="UI, input and user locale (default en-US)")
    parser.add_argument("--timezone", default="UTC", help="Windows time zone name (default UTC)")
    parser.add_argument(
        "--product-key", help="your product key (default: Microsoft's generic KMS client key for the edition, which selects it "
        "and activates nothing; none for Evaluation media)"
    )  # fmt: skip
    parser.add_argument(
        "--evaluation", action="store_true", help="Evaluation media whose image names do not say so (Windows Server Evaluation): no key"
    )
    parser.add_argument("--ssh", action="store_true", help="also install and enable the OpenSSH server (needs --openssh)")
    parser.add_argument(
        "--openssh", type=Path, help="OpenSSH-Win64 .msi or .zip from github.com/PowerShell/Win32-OpenSSH/releases, installed offline"
    )
    parser.add_argument("--certificate", type=Path, help="test-signing CA to import (default: build/signing/ca.crt when present)")


def image_options(args: argparse.Namespace) -> ImageOptions:
    """The ImageOptions the command line asked for.

    Raises:
        ConfigError: a bad value, --ssh without --openssh, an installer that is not one.
    """
    from harness.image.openssh import inspect_installer

    if args.ssh and args.openssh is None:
        raise ConfigError(
            "--ssh needs --openssh PATH: the OpenSSH-Win64 .msi or .zip from https://github.com/PowerShell/Win32-OpenSSH/releases "
            "(the build VM has no network, so Windows cannot download OpenSSH itself)"
        )
    if args.openssh is not None and not args.ssh:
        raise ConfigError("--openssh without --ssh: add --ssh to install the OpenSSH server")
    installer = inspect_installer(args.openssh) if args.openssh is not None else None
    try:
        return ImageOptions(
            edition=args.edition, locale=args.locale, timezone=args.timezone, product_key=args.product_key,
            evaluation=args.evaluation, ssh=args.ssh, openssh=installer,
            certificate=_certificate(args.certificate),
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(str(error)) from None


def run_suite(
    scenarios: list[LoadedScenario], builds: dict[str | None, Path], settings: Settings, args: argparse.Namespace
) -> tuple[SuiteResult, int]:
    """Run every scenario × image × build on the guest of ``settings`` (``args``: -j, --no-warm, --image, --shard, -v),
    printing each start and verdict; (the outcome, how many items there were)."""
    with open_lanes(settings) as lanes:
        items = expand(scenarios, builds, _images(lanes.images, args.image))
        if getattr(args, "shard", None) is not None:
            shard, shards = parse_shard(args.shard)
            items = select_shard(items, shard, shards)
            print(f"shard {shard}/{shards}: {len(items)} items", flush=True)
        history = settings.cache_dir / "durations.json"  # the longest items first: the workers finish together
        suite = Suite(
            items, lanes, settings.out_dir, jobs=_jobs(args), warm=not args.no_warm, progress=_say, verbose=getattr(args, "verbose", False),
            symbol_dirs=settings.symbol_dirs, history=load_history(history),
        )  # fmt: skip
        outcome = suite.run()
        save_history(history, outcome.results)
        return outcome, len(items)


def _images(available: list[str | None], wanted: list[str] | None) -> list[str | None]:
    """The images to run on: those asked for with --image (each checked), else every one the guest has."""
    if not wanted:
        return available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        names = ", ".join(name for name in available if name) or "none (the embedded guest, or a configuration with only vm.image)"
        raise ConfigError(f"--image {', '.join(unknown)}: no such image (images: {names})")
    return list(dict.fromkeys(wanted))


_SAY = threading.Lock()


def _say(line: str) -> None:
    """One progress line on stdout. Workers say theirs at once: print() writes the text and its newline in two
    calls, so two lines could share one (``RUN  a...RUN  b`` then an empty line); one locked write each keeps them whole."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _interrupted(outcome: SuiteResult, total: int, out: Path) -> int:
    finished = len(outcome.results) - len(outcome.cut_short)
    print(f"interrupted after {finished} of {total} scenarios ({outcome.interrupted}); guests torn down; reports in {out}", file=sys.stderr)
    return EXIT_INTERRUPTED


def signature_summary(results: list[ScenarioResult]) -> list[str]:
    """Crashes and hangs grouped by signature, most frequent first."""
    groups: dict[str, list[str]] = {}
    for result in results:
        if result.signature is not None:
            groups.setdefault(result.signature, []).append(result.id)
    if not groups:
        return []
    lines = ["crashes and hangs by signature:"]
    for signature, ids in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"  {len(ids)} x {signature}: {', '.join(ids)}")
    return lines


def compare_command(args: argparse.Namespace) -> int:
    from harness.compare import compare, render

    for folder in (args.baseline, args.candidate):
        if not folder.is_dir():
            raise ConfigError(f"drivers folder {folder} does not exist")
    scenarios = load_all(args.paths or [project_root() / "scenarios"])
    out = args.out or project_root() / "build" / "compare"
    settings = Settings.defaults(out_dir=out, guest=args.guest, config=args.config, symbol_dirs=tuple(args.symbols))
    outcome, total = run_suite(scenarios, {"baseline": args.baseline, "candidate": args.candidate}, settings, args)
    if outcome.interrupted is not None:
        return _interrupted(outcome, total, out)
    changes = compare([r for r in outcome.results if r.build == "baseline"], [r for r in outcome.results if r.build == "candidate"])
    report = render(changes)
    (out / "compare.txt").write_text(report, encoding="utf-8")
    print(report, end="")
    return EXIT_FAILED if any(change.kind == "regressed" for change in changes) else EXIT_OK


def report_merge_command(args: argparse.Namespace) -> int:
    from harness.reports.merge import merge

    merged = merge(args.dirs, args.out)
    print(f"merged {len(merged)} scenario results from {len(args.dirs)} folders into {args.out}")
    return EXIT_OK


def image_build_command(args: argparse.Namespace) -> int:
    from harness.durations import parse_duration
    from harness.image.build import BuildRequest, build_image
    from harness.secrets import load_secret

    if args.iso is None:
        raise ConfigError("no installer ISO: pass --iso with a Windows ISO of your own (it cannot be shipped); see vm-images/README.md")
    if not args.iso.is_file():
        raise ConfigError(f"installer ISO {args.iso} not found (pass --iso with a Windows ISO of your own)")
    options = image_options(args)
    try:
        timeout = parse_duration(args.timeout)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    password = load_secret(args.password_env, None, "Administrator password")
    request = BuildRequest(
        iso=args.iso, out=args.out, options=options, password=password, uri=args.uri, disk_size=args.disk_size,
        memory_mib=args.memory_mib, vcpus=args.vcpus, timeout=timeout, work_dir=default_state_dir() / "image",
        openssh=args.openssh if options.ssh else None,
    )  # fmt: skip
    manifest = build_image(request)
    print(f"built {args.out} (Windows build {manifest.windows_build}, sha256 {manifest.sha256})")
    print(f"verified: {', '.join(manifest.settings)}")
    return EXIT_OK


def image_answer_command(args: argparse.Namespace) -> int:
    from harness.image.answer import SETTINGS, expected_settings
    from harness.image.build import answer_media, write_answers
    from harness.secrets import load_secret

    options = image_options(args)
    password = load_secret(args.password_env, None, "Administrator password")
    written = write_answers(answer_media(options, password.reveal(), args.openssh if options.ssh else None), args.out)
    for path in written:
        note = (
            " (mode 0600: it holds the Administrator password in clear, as Windows Setup requires)"
            if path.name == "autounattend.xml"
            else ""
        )
        print(f"wrote {path}{note}")
    key = options.edition_key
    if key is None:
        print(f"product key: none ({options.edition} from Evaluation media)")
    elif options.product_key is not None:
        print("product key: yours (--product-key)")
    else:
        print(f"product key: {key} (Microsoft's generic KMS client key for {options.edition}: selects the edition, activates nothing)")
    print("the first-logon script applies, checks and reports:")
    for name in expected_settings(options):
        print(f"  {name}: {SETTINGS[name]}")
    return EXIT_OK


def _certificate(path: Path | None) -> bytes | None:
    default = project_root() / "build" / "signing" / "ca.crt"
    chosen = path or (default if default.is_file() else None)
    if chosen is None:
        return None
    if not chosen.is_file():
        raise ConfigError(f"certificate {chosen} not found")
    return chosen.read_bytes()


def sign_command(args: argparse.Namespace) -> int:
    from harness.driver.sign import ensure_certificate, sign

    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise ConfigError(f"no such driver image: {', '.join(missing)}")
    bundle = ensure_certificate(args.cert_dir or project_root() / "build" / "signing")
    for image in args.images:
        sign(image, bundle)
        print(f"signed {image}")
    return EXIT_OK


def kd_replay_command(args: argparse.Namespace) -> int:
    from harness.kd.serial import replay
    from harness.kd.session import KdLine

    if not args.raw.is_file():
        raise ConfigError(f"{args.raw}: no such capture file")
    for event in replay(args.raw):
        if isinstance(event, KdLine):
            sys.stdout.write(event.text + "\n")
        else:
            sys.stdout.write(f"#kd {event.describe()}\n")
    return EXIT_OK


def load_all(paths: list[Path]) -> list[LoadedScenario]:
    """Every scenario under ``paths``, validated before anything runs.

    Raises:
        ScenarioError: the first bad file (file:line: field: message).
    """
    files = discover(paths)
    if not files:
        raise ScenarioError(paths[0] if paths else Path("."), None, "", "no scenario files (*.yaml) found")
    return [load_scenario(path) for path in files]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM ends the run; later ones are ignored, so they cannot cut its teardown short."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _jobs(args: argparse.Namespace) -> int:
    jobs: int = args.jobs if args.jobs is not None else os.cpu_count() or 1
    if jobs < 1:
        raise ConfigError(f"-j {jobs}: at least 1")
    return jobs


def run_command(args: argparse.Namespace) -> int:
    settings = Settings.defaults(
        out_dir=args.out, drivers_dir=args.drivers, guest=args.guest, config=args.config, symbol_dirs=tuple(args.symbols),
        keep_failed=args.keep_failed,
    )  # fmt: skip
    scenarios = load_all(args.paths or [project_root() / "scenarios"])
    if not settings.drivers_dir.is_dir():
        raise ConfigError(f"drivers folder {settings.drivers_dir} does not exist: run `make build` or pass --drivers")
    started = time.monotonic()
    outcome, total = run_suite(scenarios, {None: settings.drivers_dir}, settings, args)
    if outcome.interrupted is not None:
        return _interrupted(outcome, total, settings.out_dir)
    results = outcome.results
    passed = sum(1 for r in results if r.passed)
    for line in signature_summary(results):
        print(line)
    print(f"{passed} passed, {len(results) - passed} failed in {time.monotonic() - started:.1f}s; reports in {settings.out_dir}")
    return EXIT_OK if passed == len(results) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _interrupt)
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "compare":
            return compare_command(args)
        if args.command == "report" and args.report_command == "merge":
            return report_merge_command(args)
        if args.command == "image" and args.image_command == "build":
            return image_build_command(args)
        if args.command == "image" and args.image_command == "answer":
            return image_answer_command(args)
        if args.command == "sign":
            return sign_command(args)
        if args.command == "kd" and args.kd_command == "replay":
            return kd_replay_command(args)
    except (ScenarioError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except GuestError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE
