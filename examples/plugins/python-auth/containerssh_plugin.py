"""Helpers for containerssh plugins written in Python (plugin API 0.2, built with componentize-py).

    import containerssh_plugin as cs

    class Authenticator(cs.Authenticator):       # the class name componentize-py looks for
        def password(self, connection, password):
            digest = cs.config(f"users.{connection.username}.password")
            if digest and cs.verify_password(digest, password):
                return cs.success(connection.username)
            return cs.failure("wrong user or password")

Methods you do not write answer `unsupported` (authorize keeps the grant). An exception in a
method never traps the plugin: its traceback goes to the gateway's log and the login is denied
with `failure`.
"""
import functools
import json
import traceback
from typing import Dict, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, password_hash
from wit_world.imports import plugin_types as types

ConnectionInfo = types.ConnectionInfo
AuthGrant = types.AuthGrant


def grant(username: str, environment: Optional[Dict[str, str]] = None,
          metadata: Optional[Dict[str, str]] = None,
          files: Optional[Dict[str, bytes]] = None,
          sensitive: Optional[List[str]] = None) -> AuthGrant:
    """A grant for `username`, with environment variables, metadata and files for the container."""
    return AuthGrant(
        authenticated_username=username,
        metadata=list((metadata or {}).items()),
        environment=list((environment or {}).items()),
        files=list((files or {}).items()),
        sensitive=list(sensitive or []),
    )


def success(username: str, **kwargs) -> types.AuthResult:
    """Let the user in (keyword arguments as for `grant`)."""
    return types.AuthResult_Success(grant(username, **kwargs))


def failure(reason: str) -> types.AuthResult:
    """Wrong credentials: counts toward the gateway's rate limits; the reason is only logged."""
    return types.AuthResult_Failure(reason)


def unavailable(reason: str) -> types.AuthResult:
    """Something this plugin depends on is down: denied, but never counted as a wrong guess."""
    return types.AuthResult_Unavailable(reason)


UNSUPPORTED = types.AuthResult_Unsupported()


def log(message: str, level: types.LogLevel = types.LogLevel.INFO) -> None:
    """A line in the gateway's log, tagged with the plugin and the connection id."""
    host.log(level, message)


def config(key: str) -> Optional[str]:
    """One value of the plugin's `config:` by dotted path ("users.alice.password"); strings as
    they are, anything else as JSON text (see `config_json`), None when missing."""
    return host.config_get(key)


def config_json(key: str, default=None):
    """One value of the plugin's config, parsed from JSON (lists, objects, numbers)."""
    text = host.config_get(key)
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return text


def verify_password(digest: str, password: bytes) -> bool:
    """Checks a bcrypt, argon2id or SHA-crypt hash natively in the gateway (fast, constant
    time). Raises ValueError for a hash the gateway cannot read."""
    try:
        return password_hash.verify(digest, password)
    except Err as e:
        raise ValueError(e.value) from None


def _guarded(method):
    @functools.wraps(method)
    def call(self, *args):
        try:
            return method(self, *args)
        except Exception:
            host.log(types.LogLevel.ERROR, "the plugin raised an exception:\n" + traceback.format_exc())
            return failure("the plugin raised an exception")
    return call


class Authenticator(exports.Authenticator):
    """Base class for authentication plugins: every method has a default, and exceptions in
    the methods a subclass writes become a logged failure."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("password", "public_key", "authorize"):
            if name in cls.__dict__:
                setattr(cls, name, _guarded(cls.__dict__[name]))

    def password(self, connection: ConnectionInfo, password: bytes) -> types.AuthResult:
        return UNSUPPORTED

    def public_key(self, connection: ConnectionInfo, public_key: str) -> types.AuthResult:
        return UNSUPPORTED

    def authorize(self, connection: ConnectionInfo, grant: AuthGrant) -> types.AuthResult:
        return types.AuthResult_Success(grant)
