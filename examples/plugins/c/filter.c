/*
 * A request filter in C: only programs on a list may run, a few names are aliases for longer
 * commands, `ssh -L` reaches only listed ports on the container's localhost, and everything
 * else that leaves the session (X11, agent, -R, sockets) is refused. It replaces the built-in
 * security policy and reads its settings from the `security` section:
 *
 *     filter:
 *       plugin: /path/to/c-filter.wasm
 *     security:
 *       programs: [echo, uname, ls]      # first word of an exec
 *       aliases: {hello: "echo hello from C"}
 *       ports: [8080]                    # ssh -L to localhost:8080 in the container
 *       maxSessions: 4
 *
 * Build: examples/plugins/c/build.sh filter c-filter.wasm
 */
#include "filter_plugin.h"
#include "containerssh_plugin.h"

/* Is the first word of `command` on `programs`? */
static bool program_allowed(const char *command) {
  size_t len = strcspn(command, " \t");
  for (int i = 0;; i++) {
    char *program = cs_configf("programs.%d", i);
    if (program == NULL)
      return false;
    bool same = strlen(program) == len && memcmp(program, command, len) == 0;
    free(program);
    if (same)
      return true;
  }
}

static bool port_allowed(uint32_t port) {
  for (int i = 0;; i++) {
    char *listed = cs_configf("ports.%d", i);
    if (listed == NULL)
      return false;
    bool same = strtoul(listed, NULL, 10) == port;
    free(listed);
    if (same)
      return true;
  }
}

static void judge_exec(const cs_string_t *exec, cs_verdict_t *ret) {
  char *command = cs_cstr(exec);
  char *alias = strchr(command, '.') ? NULL : cs_configf("aliases.%s", command);
  if (alias != NULL) {
    cs_rewrite_command(ret, alias);
    free(alias);
  } else if (program_allowed(command)) {
    cs_allow(ret);
  } else {
    char reason[256];
    snprintf(reason, sizeof reason, "%.*s is not on this gateway's list of programs",
             (int)strcspn(command, " \t"), command);
    cs_deny(ret, reason);
  }
  free(command);
}

void exports_containerssh_plugin_request_filter_filter(
    exports_containerssh_plugin_request_filter_connection_info_t *connection,
    uint32_t session_id, cs_request_t *request, cs_verdict_t *ret) {
  (void)session_id;
  switch (request->tag) {
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_OPEN_SESSION: {
    char *max = cs_config("maxSessions");
    unsigned long limit = max ? strtoul(max, NULL, 10) : 4;
    free(max);
    if (request->val.open_session < limit)
      cs_allow(ret);
    else
      cs_deny(ret, "too many sessions on this connection");
    break;
  }
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_EXEC:
    judge_exec(&request->val.exec, ret);
    break;
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_DIRECT_TCPIP: {
    const cs_string_t *host = &request->val.direct_tcpip.host;
    bool local = cs_str_eq(host, "localhost") || cs_str_eq(host, "127.0.0.1");
    if (local && port_allowed(request->val.direct_tcpip.port)) {
      cs_allow(ret);
    } else {
      cs_log(CS_INFO, "%.*s may not forward to %.*s:%u", (int)connection->username.len,
             (const char *)connection->username.ptr, (int)host->len, (const char *)host->ptr,
             (unsigned)request->val.direct_tcpip.port);
      cs_deny(ret, "forwarding to that destination is not allowed");
    }
    break;
  }
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_X11:
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_AGENT_FORWARDING:
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_TCPIP_FORWARD:
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_DIRECT_STREAMLOCAL:
  case EXPORTS_CONTAINERSSH_PLUGIN_REQUEST_FILTER_CHANNEL_REQUEST_STREAMLOCAL_FORWARD:
    cs_deny(ret, "this gateway does not forward that");
    break;
  default: /* env, pty, shell, subsystem, signal, window-change */
    cs_allow(ret);
  }
}
