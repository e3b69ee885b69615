"""OAuth2 authorization-code logins with two other SSH client implementations.

    oauth2_client.py PORT USER CA_PEM CLIENT [PASTE]

CLIENT is `asyncssh` or `paramiko`. Each logs in with keyboard-interactive: the gateway's
instructions carry a link; this script plays the user's browser (it opens the link, follows the
provider's redirect to the gateway's redirect page and reads the code there) and answers the
prompt with that code (or with PASTE, when given, to try a wrong one). Then it runs a command
that prints the user the container sees. Prints the instructions and the command's output;
exits 0 only when the login and the command succeeded.
"""
import asyncio
import html
import re
import ssl
import sys
import urllib.error
import urllib.request

PORT, USER, CA = int(sys.argv[1]), sys.argv[2], sys.argv[3]
CLIENT = sys.argv[4]
PASTE = sys.argv[5] if len(sys.argv) > 5 else None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def browse(instructions):
    """Opens the link, follows one redirect by hand, returns the code the page shows."""
    print("INSTRUCTIONS:", instructions.replace("\n", "\\n"), flush=True)
    found = re.search(r"https://\S+", instructions)
    if found is None:
        return None  # a message without a question (e.g. why the login failed)
    if PASTE is not None:
        return PASTE
    link = found.group(0)
    context = ssl.create_default_context(cafile=CA)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect)
    try:
        opener.open(link, timeout=30)
        raise SystemExit("the provider did not redirect")
    except urllib.error.HTTPError as e:
        if e.code not in (302, 303):
            raise
        back = e.headers["Location"]
    print("REDIRECTED TO:", back.split("?")[0], flush=True)
    page = urllib.request.urlopen(back, timeout=30).read().decode()
    code = re.search(r'<code id="code">([^<]*)</code>', page).group(1)
    return html.unescape(code)


def with_paramiko():
    import paramiko

    transport = paramiko.Transport(("127.0.0.1", PORT))
    transport.start_client(timeout=30)

    def handler(title, instructions, prompts):
        code = browse(instructions)
        return [code for _ in prompts]

    transport.auth_interactive(USER, handler)
    channel = transport.open_session()
    channel.exec_command("echo paramiko-in")
    out = channel.makefile().read().decode()
    print("OUTPUT:", out.strip(), flush=True)
    transport.close()


async def with_asyncssh():
    import asyncssh

    class Client(asyncssh.SSHClient):
        def kbdint_auth_requested(self):
            return ""

        def kbdint_challenge_received(self, name, instructions, lang, prompts):
            code = browse(instructions)
            return [code for _ in prompts]

    async with asyncssh.connect("127.0.0.1", PORT, username=USER, known_hosts=None,
                                agent_path=None, client_keys=None, password=None,
                                client_factory=Client,
                                preferred_auth="keyboard-interactive") as conn:
        result = await asyncio.wait_for(conn.run("echo asyncssh-in", check=True), 60)
        print("OUTPUT:", result.stdout.strip(), flush=True)


if CLIENT == "paramiko":
    with_paramiko()
else:
    asyncio.run(with_asyncssh())
