"""An authentication plugin in Python: users with password hashes and authorized keys from the
plugin's own config, the same shape as the built-in static-users:

    auth:
      plugin: /path/to/python-auth.wasm
      config:
        users:
          alice:
            password: "$2b$10$..."     # bcrypt, argon2id or SHA-crypt, checked by the gateway
            authorizedKeys: ["ssh-ed25519 AAAA... alice@laptop"]
            environment: {TEAM: blue}
"""
import containerssh_plugin as cs


def _grant(username: str):
    environment = cs.config_json(f"users.{username}.environment", {}) or {}
    environment["PLUGIN_LANGUAGE"] = "python"
    return cs.success(username, environment=environment)


class Authenticator(cs.Authenticator):
    def password(self, connection, password):
        digest = cs.config(f"users.{connection.username}.password")
        if digest is None:
            return cs.failure("unknown user")
        if cs.verify_password(digest, password):
            return _grant(connection.username)
        return cs.failure("wrong password")

    def public_key(self, connection, public_key):
        keys = cs.config_json(f"users.{connection.username}.authorizedKeys", []) or []
        offered = public_key.split()[:2]
        if any(key.split()[:2] == offered for key in keys):
            return _grant(connection.username)
        return cs.failure("key not authorized")
