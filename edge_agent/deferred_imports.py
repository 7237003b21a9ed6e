"""Modules the agent's imports bring in but its run never uses, loaded only if something does.

What ``edge-agent`` leaves unloaded, and why (resident memory on a Pi, issue 13;
bench/README.md has the figures):

- ``asyncio``: structlog imports it for its async log methods, which the agent never calls;
- ``urllib.request`` (with ``http.client`` and most of ``email``): paho reads proxy settings
  with it, only when PySocks is installed, which the agent's install is not;
- ``secrets`` and ``hashlib`` (and with them OpenSSL's libcrypto): pydantic uses ``secrets`` only
  to compare two ``SecretStr``, paho ``hashlib`` only for a WebSocket handshake;
- ``inspect`` (with ``ast``, ``dis``, ``tokenize``: 0.7 MiB resident, bench/README.md):
  ``dataclasses`` imports it, and calls it only to write a docstring for a dataclass that has
  none (``inspect.signature``). So every dataclass on the agent's run path carries a docstring:
  one without loads the real ``inspect`` (and works as ever; it only costs the memory);
- ``importlib.metadata`` (with ``email``, ``zipfile``, ``csv`` and ``tempfile``: 1.6 MB):
  pydantic's plugin loader binds ``entry_points`` from it at import and calls it when the first
  model is built, to look for pydantic plugins; the agent has none and says so
  (``PYDANTIC_DISABLE_PLUGINS``), and its version is read without it (``program_support.version``);
- ``pickle`` (pickle.py, 0.2 MiB): structlog binds ``from pickle import PicklingError`` at import,
  to raise it if someone pickles a logger that writes to stdout or stderr. That class is the C
  module ``_pickle``'s (pickle.py re-exports it), so the stand-in answers the three exception
  names from ``_pickle``: the real classes, no trap. Any other name loads pickle.py;
- ``ssl`` (and libssl), when the config has no ``[mqtt.tls]``: paho imports it at its top and
  names its exceptions in the ``except`` clauses around every socket call. Without TLS no SSL
  socket exists, so none of those can be raised: until the real module loads, the stand-in
  answers those names with exception classes nothing raises. Any other use loads the real one,
  and ``run`` loads it as soon as it has read a config with TLS (:func:`load_ssl`).

  The trap, closed: a name bound to a stand-in class keeps it after the real ssl loads, and
  ``except`` on it would then miss every real error. So the exception names are answered only to
  code running in a function (paho's ``except ssl.SSLWantReadError:``, read when an exception is
  matched); read by module-level or class-body code (``SSLError = ssl.SSLError``, a default
  argument, ``getattr``/``hasattr``: code that runs at import, the way a name gets bound for good)
  they raise :class:`SslNameBoundEarly`, an ``ImportError`` naming the name and the importer.
  ``from ssl import SSLError`` needs no check: Python reads the module's ``__path__`` first,
  which loads the real ssl, so the name bound is the real class (it costs the memory, though).
  Not caught: a function that stores ``ssl.SSLError`` for later (``self.err = ssl.SSLError``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType

#: the ``ssl`` exceptions paho (and sockets code in general) name in ``except`` clauses
SSL_EXCEPTIONS = frozenset({
    "SSLError", "SSLWantReadError", "SSLWantWriteError", "SSLZeroReturnError", "SSLEOFError",
    "SSLSyscallError", "SSLCertVerificationError", "CertificateError"})


class _Deferred(ModuleType):
    """A stand-in in ``sys.modules`` for a module nothing uses yet: ``import name`` binds this
    placeholder, and the first attribute anyone reads from it imports the real module (which
    then replaces it in ``sys.modules``) and answers from that. Nothing behaves differently;
    a module that is never used is never loaded."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # ``import name`` of a module already in sys.modules reads its ``__spec__`` (is it still
        # initialising?); importing a submodule reads ``__path__``, which is not here, so that
        # loads the real package first (its submodules must not run without it)
        self.__spec__ = importlib.util.find_spec(name)
        self.__dict__["_deferred_lock"] = threading.RLock()
        self.__dict__["_deferred_real"] = None

    def __getattr__(self, attr: str) -> object:
        real = self.__dict__["_deferred_real"]
        if real is None:
            with self.__dict__["_deferred_lock"]:
                real = self.__dict__["_deferred_real"]
                if real is None:
                    if sys.modules.get(self.__name__) is self:
                        del sys.modules[self.__name__]
                    try:
                        real = importlib.import_module(self.__name__)
                    except BaseException:
                        sys.modules.setdefault(self.__name__, self)
                        raise
                    self.__dict__["_deferred_real"] = real
        return getattr(real, attr)


def defer_import(name: str, kind: type[_Deferred] | None = None) -> None:
    """Load module ``name`` only when something first uses it (see :class:`_Deferred`, or the
    stand-in ``kind``); a module already imported stays as it is."""
    if name not in sys.modules:
        stand_in = sys.modules[name] = (kind or _Deferred)(name)
        parent, _, child = name.rpartition(".")
        if parent:  # ``import a.b`` then ``a.b.f()`` reads the package's attribute ``b``
            setattr(importlib.import_module(parent), child, stand_in)


class SslNameBoundEarly(ImportError):
    """An ``ssl`` exception name read at import while ``ssl`` is deferred: the name would hold a
    class nothing raises. A programming error, found on the first import (an ``ImportError``
    rather than a ``ThermopipeError``: nothing at run time should catch it)."""


# CPython's code flag of a function body (``inspect.CO_OPTIMIZED``, without importing inspect):
# module and class bodies, which run at import, do not have it
_CO_OPTIMIZED = 0x0001


class _DeferredSsl(_Deferred):
    """``ssl`` for an agent without TLS: its exception names answer without loading it, to code
    in functions only (see the module's docstring)."""

    def __getattr__(self, attr: str) -> object:
        if self.__dict__["_deferred_real"] is None and attr in SSL_EXCEPTIONS:
            caller = sys._getframe(1)
            if not caller.f_code.co_flags & _CO_OPTIMIZED:
                raise SslNameBoundEarly(
                    f"ssl.{attr} read at import by {caller.f_globals.get('__name__', '?')} "
                    f"(line {caller.f_lineno}) while the edge agent defers ssl: the name would "
                    f"hold a stand-in class that nothing raises. Read ssl.{attr} where it is "
                    "used (in the except clause), or load the real ssl first "
                    "(edge_agent.deferred_imports.load_ssl(), or import ssl before "
                    "defer_unused())", name="ssl")
            stand_ins = self.__dict__.setdefault("_never_raised", {})
            if attr not in stand_ins:  # one class per name: ``except`` sees the same one
                stand_ins[attr] = type(attr, (OSError,), {
                    "__module__": __name__,
                    "__doc__": "Never raised: no SSL socket exists without [mqtt.tls]."})
            return stand_ins[attr]
        return super().__getattr__(attr)


class _DeferredMetadata(_Deferred):
    """``importlib.metadata``: ``from importlib.metadata import entry_points`` binds a function
    that loads the real module when it is called, not when it is imported."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # ``from package import name`` reads ``__path__`` first (may ``name`` be a submodule?);
        # answered from the spec, so that reading it does not load the package
        if self.__spec__ is not None and self.__spec__.submodule_search_locations is not None:
            self.__path__ = list(self.__spec__.submodule_search_locations)

    def __getattr__(self, attr: str) -> object:
        if self.__dict__["_deferred_real"] is None and attr in METADATA_FUNCTIONS:
            load: Callable[[str], Callable[..., object]] = super().__getattr__  # type: ignore[assignment]

            def call(*args: object, **kwargs: object) -> object:
                return load(attr)(*args, **kwargs)

            call.__name__ = call.__qualname__ = attr
            return call
        return super().__getattr__(attr)


class _DeferredPickle(_Deferred):
    """``pickle``: its exception classes, which are ``_pickle``'s, without loading pickle.py."""

    def __getattr__(self, attr: str) -> object:
        if self.__dict__["_deferred_real"] is None:
            if attr == "__path__":  # ``from pickle import X`` asks: a package? It is not
                raise AttributeError(attr)
            if attr in PICKLE_EXCEPTIONS:
                import _pickle

                return getattr(_pickle, attr)
        return super().__getattr__(attr)


#: what pickle.py re-exports from ``_pickle`` and structlog binds at import (its exceptions)
PICKLE_EXCEPTIONS = frozenset({"PickleError", "PicklingError", "UnpicklingError"})

#: the functions of ``importlib.metadata`` that others bind at import and call later
METADATA_FUNCTIONS = frozenset({
    "entry_points", "version", "distribution", "distributions", "metadata", "requires", "files",
    "packages_distributions"})


def defer_unused() -> None:
    """What ``edge-agent`` leaves unloaded until used (see the module's docstring); called
    before pydantic and paho are imported."""
    for name in ("asyncio", "urllib.request", "secrets", "hashlib", "inspect"):
        defer_import(name)
    defer_import("ssl", _DeferredSsl)
    defer_import("pickle", _DeferredPickle)
    # no pydantic plugins in the agent: pydantic then never lists the installed packages
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    defer_import("importlib.metadata", _DeferredMetadata)


def load_ssl() -> None:
    """Load the real ``ssl`` now (a config with ``[mqtt.tls]``): from here on every name,
    the exceptions too, is the real module's."""
    module = sys.modules.get("ssl")
    if isinstance(module, _Deferred):
        module.SSLContext  # noqa: B018 - reading any other attribute loads it
