/*
 * Helpers for containerssh plugins written in C (plugin API 0.2, bindings from `wit-bindgen c`).
 *
 * Include the header wit-bindgen generated for your world first, then this one:
 *
 *     #include "authenticator_plugin.h"   // or filter_plugin.h, config_plugin.h
 *     #include "containerssh_plugin.h"
 *
 * Memory ownership (the rules the generated code follows; these helpers keep them for you):
 *   - Everything an export returns to the gateway is freed with free() by the generated code
 *     after the gateway has read it. Returned strings and lists must therefore come from
 *     malloc(): never a string literal, a stack buffer or a borrowed argument. cs_str() copies.
 *   - Arguments the gateway passes to an export belong to the export. The gateway makes a
 *     fresh instance for every call, so letting them go is fine; free them with the generated
 *     `..._free` functions if a call allocates a lot.
 *   - Arguments passed to an import (cs_log, cs_config, ...) are only borrowed by the gateway.
 *   - Whatever an import returns belongs to the plugin (cs_config() returns malloc'd memory).
 */
#ifndef CONTAINERSSH_PLUGIN_H
#define CONTAINERSSH_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The world's string type, whichever world's header came first (all have the same layout). */
#if defined(__BINDINGS_AUTHENTICATOR_PLUGIN_H)
typedef authenticator_plugin_string_t cs_string_t;
#elif defined(__BINDINGS_FILTER_PLUGIN_H)
typedef filter_plugin_string_t cs_string_t;
#elif defined(__BINDINGS_CONFIG_PLUGIN_H)
typedef config_plugin_string_t cs_string_t;
#else
#error "include the header wit-bindgen generated (authenticator_plugin.h, filter_plugin.h or config_plugin.h) before containerssh_plugin.h"
#endif

/* Log levels for cs_log. */
#define CS_TRACE CONTAINERSSH_PLUGIN_PLUGIN_TYPES_LOG_LEVEL_TRACE
#define CS_DEBUG CONTAINERSSH_PLUGIN_PLUGIN_TYPES_LOG_LEVEL_DEBUG
#define CS_INFO CONTAINERSSH_PLUGIN_PLUGIN_TYPES_LOG_LEVEL_INFO
#define CS_WARN CONTAINERSSH_PLUGIN_PLUGIN_TYPES_LOG_LEVEL_WARN
#define CS_ERROR CONTAINERSSH_PLUGIN_PLUGIN_TYPES_LOG_LEVEL_ERROR

/* A copy of `len` bytes in malloc'd memory: safe to return to the gateway. */
static inline cs_string_t cs_str_n(const char *s, size_t len) {
  cs_string_t out = {NULL, 0};
  if (len > 0) {
    out.ptr = (uint8_t *)malloc(len);
    if (out.ptr == NULL)
      abort(); /* out of memory: the gateway logs a trap and denies */
    memcpy(out.ptr, s, len);
    out.len = len;
  }
  return out;
}

/* A copy of a NUL-terminated string in malloc'd memory: safe to return to the gateway. */
static inline cs_string_t cs_str(const char *s) { return cs_str_n(s, strlen(s)); }

/* A copy of a string the gateway passed in (to return it, e.g. the user name). */
static inline cs_string_t cs_str_copy(const cs_string_t *s) {
  return cs_str_n((const char *)s->ptr, s->len);
}

/* True when `s` holds exactly the characters of `c`. */
static inline bool cs_str_eq(const cs_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && (n == 0 || memcmp(s->ptr, c, n) == 0);
}

/* A NUL-terminated copy of `s` (malloc'd; free it). Strings from the gateway are not
 * NUL-terminated. */
static inline char *cs_cstr(const cs_string_t *s) {
  char *out = (char *)malloc(s->len + 1);
  if (out == NULL)
    abort();
  if (s->len > 0)
    memcpy(out, s->ptr, s->len);
  out[s->len] = '\0';
  return out;
}

/* A printf-style line in the gateway's log, tagged with the plugin and the connection id
 * (at most 1023 bytes). stderr works too: it is logged at warn. */
static inline void cs_log(uint8_t level, const char *format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n < 0)
    return;
  cs_string_t message = {(uint8_t *)line, strlen(line)}; /* borrowed by the gateway */
  containerssh_plugin_host_log(level, &message);
}

/* One value of the plugin's configuration by dotted path ("users.alice.password", list
 * elements by index: "programs.0"), NUL-terminated and malloc'd (free it); NULL when the path
 * does not exist. Strings come without quotes; numbers, booleans, lists and objects as JSON. */
static inline char *cs_config(const char *key) {
  cs_string_t k = {(uint8_t *)key, strlen(key)};
  cs_string_t value;
  if (!containerssh_plugin_host_config_get(&k, &value))
    return NULL;
  char *out = cs_cstr(&value);
  free(value.ptr);
  return out;
}

/* printf-style key for cs_config: cs_configf("users.%s.password", user). */
static inline char *cs_configf(const char *format, ...) {
  char key[512];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(key, sizeof key, format, args);
  va_end(args);
  if (n < 0 || (size_t)n >= sizeof key)
    return NULL;
  return cs_config(key);
}

#if defined(__BINDINGS_AUTHENTICATOR_PLUGIN_H)
typedef containerssh_plugin_plugin_types_auth_result_t cs_auth_result_t;
typedef containerssh_plugin_plugin_types_auth_grant_t cs_auth_grant_t;

/* Let the user in as `username` (copied), with nothing else in the grant yet. */
static inline void cs_success(cs_auth_result_t *ret, const cs_string_t *username) {
  memset(ret, 0, sizeof *ret);
  ret->tag = CONTAINERSSH_PLUGIN_PLUGIN_TYPES_AUTH_RESULT_SUCCESS;
  ret->val.success.authenticated_username = cs_str_copy(username);
}

/* Adds an environment variable for the user's container to a grant (both strings copied). */
static inline void cs_grant_env(cs_auth_grant_t *grant, const char *name, const char *value) {
  size_t n = grant->environment.len;
  void *grown = realloc(grant->environment.ptr, (n + 1) * sizeof grant->environment.ptr[0]);
  if (grown == NULL)
    abort();
  grant->environment.ptr = grown;
  grant->environment.ptr[n].f0 = cs_str(name);
  grant->environment.ptr[n].f1 = cs_str(value);
  grant->environment.len = n + 1;
}

/* Wrong credentials: counts toward the gateway's rate limits; the reason is only logged. */
static inline void cs_failure(cs_auth_result_t *ret, const char *reason) {
  ret->tag = CONTAINERSSH_PLUGIN_PLUGIN_TYPES_AUTH_RESULT_FAILURE;
  ret->val.failure = cs_str(reason);
}

/* Something this plugin depends on is down: denied, never counted as a wrong guess. */
static inline void cs_unavailable(cs_auth_result_t *ret, const char *reason) {
  ret->tag = CONTAINERSSH_PLUGIN_PLUGIN_TYPES_AUTH_RESULT_UNAVAILABLE;
  ret->val.unavailable = cs_str(reason);
}

/* This plugin does not handle this method: the client may try another. */
static inline void cs_unsupported(cs_auth_result_t *ret) {
  ret->tag = CONTAINERSSH_PLUGIN_PLUGIN_TYPES_AUTH_RESULT_UNSUPPORTED;
}

/* Checks `password` against a bcrypt, argon2id or SHA-crypt `hash` natively in the gateway:
 * 1 on a match, 0 on a mismatch, -1 for a hash the gateway cannot read (the reason is logged). */
static inline int cs_verify_password(const char *hash, const uint8_t *password, size_t len) {
  cs_string_t h = {(uint8_t *)hash, strlen(hash)};
  authenticator_plugin_list_u8_t p = {(uint8_t *)password, len};
  bool matches = false;
  cs_string_t err;
  if (!containerssh_plugin_password_hash_verify(&h, &p, &matches, &err)) {
    cs_log(CS_ERROR, "unreadable password hash: %.*s", (int)err.len, (const char *)err.ptr);
    free(err.ptr);
    return -1;
  }
  return matches ? 1 : 0;
}
#endif /* authenticator */

#if defined(__BINDINGS_FILTER_PLUGIN_H)
typedef exports_containerssh_plugin_request_filter_verdict_t cs_verdict_t;
typedef exports_containerssh_plugin_request_filter_channel_request_t cs_request_t;

static inline void cs_allow(cs_verdict_t *ret) {
  ret->tag = EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_VERDICT_ALLOW;
}

/* Refuse; the reason (copied) is shown to the client where the protocol allows it. */
static inline void cs_deny(cs_verdict_t *ret, const char *reason) {
  ret->tag = EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_VERDICT_DENY;
  ret->val.deny = cs_str(reason);
}

/* Allow an exec or a shell, but run `command` (copied) instead. */
static inline void cs_rewrite_command(cs_verdict_t *ret, const char *command) {
  ret->tag = EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_VERDICT_REWRITE_COMMAND;
  ret->val.rewrite_command = cs_str(command);
}
#endif /* filter */

#endif /* CONTAINERSSH_PLUGIN_H */
