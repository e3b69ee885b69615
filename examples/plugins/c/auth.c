/*
 * An authentication plugin in C: users with password hashes and authorized keys from the
 * plugin's own config, the same shape as the built-in static-users:
 *
 *     auth:
 *       plugin: /path/to/c-auth.wasm
 *       config:
 *         users:
 *           alice:
 *             password: "$2b$10$..."   # bcrypt, argon2id or SHA-crypt, checked by the gateway
 *             authorizedKeys: ["ssh-ed25519 AAAA... alice@laptop"]
 *             team: blue               # becomes TEAM in the container
 *
 * Build: examples/plugins/c/build.sh auth c-auth.wasm
 */
#include "authenticator_plugin.h"
#include "containerssh_plugin.h"

/* The grant every accepted login gets: the user, PLUGIN_LANGUAGE=c and TEAM when set. */
static void grant(const cs_string_t *username, const char *user, cs_auth_result_t *ret) {
  cs_success(ret, username);
  cs_grant_env(&ret->val.success, "PLUGIN_LANGUAGE", "c");
  char *team = cs_configf("users.%s.team", user);
  if (team != NULL) {
    cs_grant_env(&ret->val.success, "TEAM", team);
    free(team);
  }
}

void exports_containerssh_plugin_authenticator_password(
    exports_containerssh_plugin_authenticator_connection_info_t *connection,
    authenticator_plugin_list_u8_t *password,
    exports_containerssh_plugin_authenticator_auth_result_t *ret) {
  char *user = cs_cstr(&connection->username);
  char *hash = cs_configf("users.%s.password", user);
  if (hash == NULL) {
    cs_failure(ret, "unknown user");
  } else {
    switch (cs_verify_password(hash, password->ptr, password->len)) {
    case 1:
      grant(&connection->username, user, ret);
      break;
    case 0:
      cs_failure(ret, "wrong password");
      break;
    default:
      /* stderr reaches the gateway's log too (at warn). */
      fprintf(stderr, "the password hash configured for %s cannot be read\n", user);
      cs_failure(ret, "unreadable password hash");
    }
    free(hash);
  }
  free(user);
}

/* Length of the "type base64" part of an authorized_keys line (the comment is ignored). */
static size_t key_part(const char *key, size_t len) {
  size_t spaces = 0;
  for (size_t i = 0; i < len; i++)
    if (key[i] == ' ' && ++spaces == 2)
      return i;
  return len;
}

void exports_containerssh_plugin_authenticator_public_key(
    exports_containerssh_plugin_authenticator_connection_info_t *connection,
    authenticator_plugin_string_t *public_key,
    exports_containerssh_plugin_authenticator_auth_result_t *ret) {
  char *user = cs_cstr(&connection->username);
  const char *offered = (const char *)public_key->ptr;
  size_t offered_len = key_part(offered, public_key->len);
  cs_failure(ret, "key not authorized");
  for (int i = 0;; i++) {
    char *key = cs_configf("users.%s.authorizedKeys.%d", user, i);
    if (key == NULL)
      break;
    size_t len = key_part(key, strlen(key));
    bool same = len == offered_len && memcmp(key, offered, len) == 0;
    free(key);
    if (same) {
      free(ret->val.failure.ptr);
      grant(&connection->username, user, ret);
      break;
    }
  }
  free(user);
}

/* Nothing to add after authentication: the grant stays as it is. */
void exports_containerssh_plugin_authenticator_authorize(
    exports_containerssh_plugin_authenticator_connection_info_t *connection,
    exports_containerssh_plugin_authenticator_auth_grant_t *grant,
    exports_containerssh_plugin_authenticator_auth_result_t *ret) {
  (void)connection;
  ret->tag = CONTAINERSSH_PLUGIN_PLUGIN_TYPES_AUTH_RESULT_SUCCESS;
  ret->val.success = *grant; /* the argument is ours: handing it back moves it */
}
