#!/usr/bin/env bash
# Builds the test images locally (no registry needed): a root filesystem made from
# busybox-static with httpd, CGI scripts and a few tools, as legato-test/busybox:latest and,
# with another /www/version (so another image ID), legato-test/busybox:v2.
# Rebuilt only when this script changes.
set -euo pipefail
IMAGE=legato-test/busybox
version=$(sha256sum "$0" | cut -c1-12)
current() { docker image inspect -f '{{index .Config.Labels "legato.test-image"}}' "$1" 2>/dev/null || true; }
if [ "$(current "$IMAGE:latest")" = "$version" ] && [ "$(current "$IMAGE:v2")" = "$version" ]; then
  exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,www/cgi-bin,tmp,etc,data}
cp /bin/busybox "$root/bin/busybox"
for tool in sh httpd echo sleep cat mkdir hostname wget nc ls env date printf true false \
            kill ps yes head tail grep sed rm touch seq dd sha256sum md5sum; do
  ln -sf busybox "$root/bin/$tool"
done
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
echo "hello from legato" > "$root/www/index.html"
echo "ok" > "$root/www/healthz"
cat > "$root/www/cgi-bin/whoami" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
hostname
CGI
cat > "$root/www/cgi-bin/env" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
env
CGI
cat > "$root/www/cgi-bin/sleep" <<'CGI'
#!/bin/sh
# /cgi-bin/sleep?0.5 answers after that many seconds
printf 'Content-Type: text/plain\r\n\r\n'
sleep "${QUERY_STRING:-1}"
echo slept
CGI
cat > "$root/www/cgi-bin/status" <<'CGI'
#!/bin/sh
# /cgi-bin/status?503 answers with that status
printf 'Status: %s Status\r\nContent-Type: text/plain\r\n\r\n' "${QUERY_STRING:-500}"
echo status
CGI
cat > "$root/www/cgi-bin/burn" <<'CGI'
#!/bin/sh
# /cgi-bin/burn?N hashes N MiB of zeros: CPU work on demand
printf 'Content-Type: text/plain\r\n\r\n'
dd if=/dev/zero bs=1048576 count="${QUERY_STRING:-1}" 2>/dev/null | sha256sum
CGI
chmod +x "$root"/www/cgi-bin/*
for tag in latest v2; do
  if [ "$tag" = latest ]; then echo 1 > "$root/www/version"; else echo 2 > "$root/www/version"; fi
  tar -C "$root" -c . | docker import \
    -c 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]' \
    -c 'EXPOSE 8080' \
    -c "LABEL legato.test-image=$version" \
    - "$IMAGE:$tag" >/dev/null
  echo "[setup] built $IMAGE:$tag"
done
