"""``edge-agent run`` leaves asyncio unloaded (structlog imports it; the agent never uses it), and
a deferred module still works the moment something does use it. Each case runs in a fresh
interpreter: the test process has imported asyncio long ago."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.agent_pi.helpers import ROOT


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_agent_and_its_logging_do_not_load_asyncio() -> None:
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_import
        defer_import("asyncio")
        import structlog
        from program_support import log_setup
        import edge_agent.agent, edge_agent.sources.onewire, edge_agent.supervisor
        log_setup.configure("info", "json", site="s", device_id="d", stream=sys.stdout)
        structlog.get_logger().info("test.logged", sensor="28-1")
        print(type(sys.modules["asyncio"]).__name__)
    """)
    assert '"event": "test.logged"' in out
    assert out.splitlines()[-1] == "_Deferred"


def test_a_deferred_module_loads_on_first_use_and_then_is_the_real_one() -> None:
    out = python("""
        import sys, threading
        from edge_agent.deferred_imports import defer_import
        defer_import("asyncio")
        import asyncio                      # binds the stand-in, loads nothing
        assert type(sys.modules["asyncio"]).__name__ == "_Deferred"
        from structlog import get_logger    # structlog.stdlib and _native hold the stand-in

        async def work() -> int:
            get_logger()  # no configure: the default logger
            await asyncio.sleep(0)
            return 42

        results = []
        threads = [threading.Thread(target=lambda: results.append(asyncio.run(work())))
                   for _ in range(4)]  # first use from several threads at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        import asyncio as again
        print(results, type(sys.modules["asyncio"]).__name__, again.run is asyncio.run)
    """)
    assert out.strip() == "[42, 42, 42, 42] module True"


def test_a_submodule_import_loads_the_real_package_first() -> None:
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_import
        defer_import("asyncio")
        import asyncio
        import asyncio.events
        events = sys.modules["asyncio.events"]
        print(type(sys.modules["asyncio"]).__name__, asyncio.events is events)

        async def one() -> int:
            return 1

        print(asyncio.run(one()))
    """)
    assert out.split() == ["module", "True", "1"]


def test_a_module_already_imported_is_left_alone() -> None:
    out = python("""
        import sys, json
        from edge_agent.deferred_imports import defer_import
        defer_import("json")
        print(sys.modules["json"] is json)
    """)
    assert out.strip() == "True"


def test_paho_leaves_urllib_request_unloaded_and_a_use_of_it_still_works() -> None:
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_import
        defer_import("urllib.request")
        import paho.mqtt.client as client
        loaded = [m for m in ("http.client", "email.parser") if m in sys.modules]
        print(type(sys.modules["urllib.request"]).__name__, loaded)
        print(type(client.urllib.request.getproxies()).__name__,
              type(sys.modules["urllib.request"]).__name__)
    """)
    assert out.splitlines() == ["_Deferred []", "dict module"]


def test_without_tls_the_agent_loads_neither_ssl_nor_hashlib_nor_openssl() -> None:
    # OpenSSL's libcrypto and libssl and the ssl module: about 4 MiB of an agent's memory
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()  # what edge-agent run does first
        import edge_agent.cli
        import edge_agent.agent, edge_agent.supervisor, edge_agent.sources.onewire
        import edge_agent.sources.serial_source, paho.mqtt.client
        print(sorted(m for m in ("ssl", "_ssl", "hashlib", "_hashlib", "secrets", "hmac")
                     if type(sys.modules.get(m)).__name__ == "module"))
        print([line.split()[-1] for line in open("/proc/self/maps")
               if "libcrypto" in line or "libssl" in line][:1])
    """)
    assert out.splitlines() == ["[]", "[]"]


def test_a_documented_dataclass_leaves_inspect_unloaded_and_an_undocumented_one_still_works(
) -> None:
    # inspect, ast, dis and tokenize: 0.7 MiB of an agent's memory (bench/README.md); dataclasses
    # reads inspect only to write the docstring of a dataclass that has none
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()  # what edge-agent run does first
        from dataclasses import dataclass, fields
        import program_support.client_id_clash, edge_agent.state_file

        @dataclass(frozen=True, slots=True)
        class Documented:
            'Says what it is.'
            a: int

        print(type(sys.modules["inspect"]).__name__, Documented(1), Documented.__doc__)

        @dataclass
        class Undocumented:
            a: int
            b: str = "x"

        print(type(sys.modules["inspect"]).__name__, Undocumented.__doc__,
              [f.name for f in fields(Undocumented)])
    """)
    assert out.splitlines() == [
        "_Deferred Documented(a=1) Says what it is.",
        "module Undocumented(a: int, b: str = 'x') ['a', 'b']"]


def test_the_agent_reads_its_version_and_builds_models_without_importlib_metadata() -> None:
    # importlib.metadata brings email, zipfile and csv: 1.6 MB; pydantic's plugin loader binds
    # entry_points from it at import, and the agent's birth carries the installed version
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()
        import edge_agent.cli, edge_agent.agent, edge_agent.config
        from schemas.models import ReadingEvent
        from pydantic import create_model
        create_model("Fresh", x=(int, 1))(x=2)  # a model built after start-up too
        print(edge_agent.agent.AGENT_VERSION, type(sys.modules["importlib.metadata"]).__name__,
              sorted(m for m in ("email", "zipfile", "csv") if m in sys.modules))
        from importlib.metadata import entry_points, version  # still there when called
        print(version("thermopipe") == edge_agent.agent.AGENT_VERSION,
              type(sys.modules["importlib.metadata"]).__name__)
    """)
    from importlib.metadata import version
    assert out.splitlines() == [f"{version('thermopipe')} _DeferredMetadata []", "True module"]


def test_the_ssl_stand_in_names_exceptions_nothing_raises_until_ssl_is_used() -> None:
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()
        import ssl

        def read() -> None:
            try:  # what paho does around every socket call
                raise BlockingIOError()
            except ssl.SSLWantReadError:
                print("wrong")
            except BlockingIOError:
                print("blocking", type(sys.modules["ssl"]).__name__)

        read()
        context = ssl.create_default_context()  # any other use loads the real module
        print(type(context).__name__, type(sys.modules["ssl"]).__name__,
              ssl.SSLError is sys.modules["ssl"].SSLError)
    """)
    assert out.splitlines() == ["blocking _DeferredSsl", "SSLContext module True"]


def test_binding_an_ssl_exception_name_at_import_fails_loudly(tmp_path: Path) -> None:
    # the trap: `SSLError = ssl.SSLError` at import would hold a class nothing raises once the
    # real ssl loads; module level, class body and getattr each raise, naming name and importer
    (tmp_path / "binds_at_module.py").write_text("import ssl\nSSLError = ssl.SSLError\n")
    (tmp_path / "binds_in_class.py").write_text(
        "import ssl\nclass Link:\n    errors = (ssl.SSLEOFError, OSError)\n")
    (tmp_path / "binds_by_getattr.py").write_text(
        "import ssl\nE = getattr(ssl, 'CertificateError', OSError)\n")
    out = python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from edge_agent.deferred_imports import SslNameBoundEarly, defer_unused, load_ssl
        defer_unused()
        for name in ("binds_at_module", "binds_in_class", "binds_by_getattr"):
            try:
                __import__(name)
            except SslNameBoundEarly as exc:
                assert isinstance(exc, ImportError)
                print(str(exc).split(" while ")[0])
        print(type(sys.modules["ssl"]).__name__)
        load_ssl()  # with the real ssl loaded, the same module binds the real class
        import binds_at_module, ssl
        print(binds_at_module.SSLError is ssl.SSLError, type(ssl).__name__)
    """)
    assert out.splitlines() == [
        "ssl.SSLError read at import by binds_at_module (line 2)",
        "ssl.SSLEOFError read at import by binds_in_class (line 3)",
        "ssl.CertificateError read at import by binds_by_getattr (line 2)",
        "_DeferredSsl", "True module"]


def test_from_ssl_import_binds_the_real_class() -> None:
    # Python reads the module's __path__ before a from-import, which loads the real ssl
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()
        from ssl import SSLError
        print(SSLError is sys.modules["ssl"].SSLError, type(sys.modules["ssl"]).__name__)
    """)
    assert out.splitlines() == ["True module"]


def test_a_tls_config_loads_the_real_ssl_before_paho_sees_it() -> None:
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused, load_ssl
        defer_unused()
        load_ssl()
        import ssl, paho.mqtt.client as client
        print(type(sys.modules["ssl"]).__name__, client.ssl.SSLError is sys.modules["ssl"].SSLError)
    """)
    assert out.splitlines() == ["module True"]


def test_the_clock_probe_loads_ctypes_and_subprocess_only_when_it_needs_them(tmp_path) -> None:
    # a Pi with systemd-timesyncd: its flag file answers, nothing else is imported
    flag = tmp_path / "synchronized"
    flag.write_text("")
    out = python(f"""
        import sys
        sys.modules["rich"] = None  # as installed: no rich (the dev tools' structlog imports it)
        from edge_agent.deferred_imports import defer_unused
        defer_unused()  # as edge-agent runs (asyncio imports subprocess)
        from edge_agent import clock
        assert "ctypes" not in sys.modules and "subprocess" not in sys.modules
        clock.TIMESYNCD_FLAG = {str(flag)!r}
        print(clock.read_sync_status(), "ctypes" in sys.modules, "subprocess" in sys.modules)
    """)
    assert out.split() == ["True", "False", "False"]


def test_adjtimex_denied_is_not_asked_again() -> None:
    # under the unit ProtectClock makes adjtimex(2) fail with EPERM: remembered, then the next
    # probe (timedatectl) answers
    out = python("""
        import ctypes, errno
        from edge_agent import clock

        class Timex(ctypes.Structure):
            _fields_ = [("status", ctypes.c_int)]

        calls = []

        def denied(ref):
            calls.append(1)
            ctypes.set_errno(errno.EPERM)
            return -1

        probe = clock._Adjtimex()
        probe._call = (denied, Timex)
        print(probe(), probe(), len(calls), probe.denied)
    """)
    assert out.split() == ["None", "None", "1", "True"]


def test_the_units_command_line_is_read_without_argparse_as_argparse_reads_it(
        tmp_path: Path) -> None:
    from edge_agent.cli import _parser, run_arguments

    config = str(tmp_path / "agent.toml")
    for argv in (["run", "-c", config], ["run", "--config", config],
                 ["run", "-c", config, "--status-line"], ["run", "--status-line", "-c", config]):
        parsed = _parser().parse_args(argv)
        assert run_arguments(argv) == (parsed.config, parsed.status_line), argv
    # any other shape is argparse's to read (and to refuse)
    for argv in (["run", f"--config={config}"], ["run", "-c"], ["run", "-c", "-x"],
                 ["run", "-c", config, "--status-line", "--status-line"], ["run", "--conf", config],
                 ["check-config", config], ["run", "-c", config, "extra"], ["run", "-c", ""], []):
        assert run_arguments(argv) is None, argv
    # the agent started as the unit starts it (here with a config that is not there: exit 2)
    out = python(f"""
        import sys
        from edge_agent.deferred_imports import defer_unused
        defer_unused()
        from edge_agent.cli import main
        code = main(["run", "-c", {config!r}])
        print(code, "argparse" in sys.modules, "gettext" in sys.modules)
    """)
    assert out.splitlines()[-1] == "2 False False"


def test_the_run_path_leaves_pickle_shutil_and_concurrent_futures_unloaded() -> None:
    # pickle.py 0.2 MiB, shutil with bz2 and lzma 0.2-0.6, concurrent.futures 0.1-0.2 MiB of a
    # running agent (bench/README.md); structlog binds pickle's exception, which is _pickle's
    out = python("""
        import sys
        from edge_agent.deferred_imports import defer_unused
        # the agent's install has no rich; the dev extra's does, and structlog.dev would import
        # it (and rich imports pickle)
        sys.modules["rich"] = None
        defer_unused()  # what edge-agent run does first
        import edge_agent.cli
        import edge_agent.agent, edge_agent.supervisor, edge_agent.sources.onewire
        import structlog._output, _pickle
        print(sorted(m for m in ("pickle", "shutil", "bz2", "lzma", "concurrent.futures")
                     if type(sys.modules.get(m)).__name__ == "module"))
        print(structlog._output.PicklingError is _pickle.PicklingError)
        import pickle
        from pickle import UnpicklingError
        print(pickle.loads(pickle.dumps([1, "a"])), type(sys.modules["pickle"]).__name__,
              structlog._output.PicklingError is pickle.PicklingError,
              UnpicklingError is pickle.UnpicklingError)
    """)
    assert out.splitlines() == ["[]", "True", "[1, 'a'] module True True"]
