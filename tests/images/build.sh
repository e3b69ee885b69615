#!/bin/sh
# Builds a small guest image without any registry: busybox-static, OpenSSH's sftp-server and scp
# (for `scp -O`), rsync, socat (servers on Unix sockets for the forwarding tests), the C
# libraries they need, and a user with uid 1000.
#   tests/images/build.sh [TAG]      (default TAG: containerssh-test/guest:5)
# Needs: docker, busybox-static, openssh-sftp-server, openssh-client, rsync, socat (Debian packages).
set -eu
tag=${1:-containerssh-test/guest:5}
for f in /bin/busybox /usr/lib/openssh/sftp-server /usr/bin/scp /usr/bin/ssh-add /usr/bin/xdpyinfo /usr/bin/rsync /usr/bin/socat; do
  [ -x "$f" ] || { echo "build.sh: $f is missing (apt-get install busybox-static openssh-sftp-server openssh-client x11-utils rsync socat)" >&2; exit 1; }
done
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/home/user" "$root/proc" "$root/dev" "$root/sys" "$root/usr/bin"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
# Copy each binary with the shared libraries ldd names.
for bin in /usr/lib/openssh/sftp-server /usr/bin/scp /usr/bin/ssh-add /usr/bin/xdpyinfo /usr/bin/rsync /usr/bin/socat; do
  install -D -m 0755 "$bin" "$root$bin"
  ldd "$bin" | awk '/=>/ {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r lib; do
    [ -n "$lib" ] && install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "containerssh guest" > "$root/etc/motd"
chown -R 1000:1000 "$root/home/user"
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/bin:/bin' -c 'WORKDIR /home/user' -c 'CMD ["/bin/sh"]' - "$tag" >/dev/null
echo "built $tag"
