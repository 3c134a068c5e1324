#!/usr/bin/env bash
# Installs the pinned Prometheus stack (observability/stack/versions: Debian 13 "trixie"'s
# prometheus-pushgateway, prometheus-alertmanager and, where pinned for the architecture,
# victoria-metrics; prometheus and promtool from the `also-suite`, Debian forky) into a project
# folder, not over the system, the same way on Debian 12 and Debian 13:
#
#   - a private apt configuration under the folder (its own sources.list naming the pinned suites
#     on the Debian mirror this machine already uses, its own lists, cache and status), checked
#     against the system's Debian archive keyring;
#   - `apt-get update` and `apt-get download <package>=<version>` on that configuration only;
#   - each .deb's sha256 checked against the pin, then unpacked with `dpkg-deb -x`;
#   - bin/ exposing prometheus, promtool, prometheus-pushgateway (and pushgateway),
#     prometheus-alertmanager (and alertmanager), amtool and victoria-metrics, each asked for its
#     --version (Debian's victoria-metrics reports none: it must run, and its package be the pin).
#
# Download and unpacking need no root. One thing lands outside the folder: Debian's build of
# Alertmanager reads its default notification templates (default.tmpl, email.tmpl) from a path
# compiled into it, /usr/share/prometheus/alertmanager, and loads no configuration without them;
# those two files are copied there (with sudo when not root), unless a Debian package already
# owns them. A stamp file holding the pins makes a re-run a no-op that returns at once. A pinned
# version the mirror no longer has is an error that says so (and what the mirror has instead).
#
# Usage: observability/stack/install.sh [--check]
#   --check   exit 0 when the pinned stack is installed, 1 when not; change nothing.
# Environment:
#   PROMETHEUS_STACK_DIR      where to install (default: <project>/.tools/prometheus-stack;
#                             the Python side, local/prometheus_stack.py, reads the same variable)
#   PROMETHEUS_STACK_MIRROR   the Debian mirror (default: the one in /etc/apt/sources.list(.d))
#   PROMETHEUS_STACK_SECURITY_MIRROR   its security archive (default: the system's, or
#                             deb.debian.org/debian-security)
#   PROMETHEUS_STACK_KEYRING  the keyring apt checks the suite's signature with

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VERSIONS="$HERE/versions"
DEST="${PROMETHEUS_STACK_DIR:-$ROOT/.tools/prometheus-stack}"
BINARIES=(prometheus promtool prometheus-pushgateway pushgateway prometheus-alertmanager alertmanager amtool)

say() { echo "prometheus-stack: $*" >&2; }
die() { echo "prometheus-stack: ERROR: $*" >&2; exit 1; }

check_only=""
case "${1:-}" in
  "") ;;
  --check) check_only=yes ;;
  *) die "unknown argument $1 (usage: $0 [--check])" ;;
esac

command -v dpkg >/dev/null && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
  || die "apt-get, dpkg and dpkg-deb are needed: this installer runs on Debian 12 or 13"
[ -r "$VERSIONS" ] || die "no pins file at $VERSIONS"

ARCH="$(dpkg --print-architecture)"
SUITE="$(awk '$1 == "suite" { print $2; exit }' "$VERSIONS")"
[ -n "$SUITE" ] || die "$VERSIONS names no suite (a line 'suite <codename>')"
# Further suites a pin may come from (lines 'also-suite <codename>'): their main only.
ALSO_SUITES="$(awk '$1 == "also-suite" { print $2 }' "$VERSIONS" | tr "\n" " " | sed "s/ $//")"
# "package version arch sha256", one pin a line, for this machine's architecture.
PINS="$(awk -v arch="$ARCH" '!/^[[:space:]]*#/ && NF == 4 && $3 == arch { print $1, $2, $3, $4 }' "$VERSIONS")"
[ -n "$PINS" ] || die "$VERSIONS pins nothing for architecture $ARCH"
if awk '$1 == "victoria-metrics"' <<<"$PINS" | grep -q .; then BINARIES+=(victoria-metrics); fi
STAMP="$DEST/.installed"
STAMP_TEXT="$(printf 'suite %s %s\n%s' "$SUITE" "$ALSO_SUITES" "$PINS")"
# Where Debian's Alertmanager looks for its default templates (compiled in, no flag moves it).
AM_SHARE=/usr/share/prometheus/alertmanager
AM_TEMPLATES=(default.tmpl email.tmpl)

templates_in_place() {
  local t owned=""
  for t in "${AM_TEMPLATES[@]}"; do
    cmp -s "$DEST/root$AM_SHARE/$t" "$AM_SHARE/$t" && continue
    [ -f "$AM_SHARE/$t" ] || return 1
    # A system prometheus-alertmanager's own (other) version: used as it is, never overwritten.
    [ -n "$owned" ] || owned="$(dpkg -S "$AM_SHARE/$t" 2>/dev/null || true)"
    [ -n "$owned" ] || return 1
  done
}

up_to_date() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_TEXT" ] || return 1
  local bin
  for bin in "${BINARIES[@]}"; do [ -x "$DEST/bin/$bin" ] || return 1; done
  templates_in_place
}

if up_to_date; then exit 0; fi
[ -z "$check_only" ] || exit 1

mkdir -p "$DEST"
if command -v flock >/dev/null; then
  # Two `make` runs at once (two targets, two terminals) install once.
  exec 9>"$DEST/.lock"
  flock 9
  if up_to_date; then exit 0; fi
fi
started=$SECONDS

# ------------------------------------------------------------------ the machine's Debian mirror

# "uri suite" for every enabled deb entry of the system's apt sources, one-line and deb822.
system_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' "$f" | awk '$1 == "deb" {
      i = 2
      if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if (i + 1 <= NF) print $i, $(i + 1) }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush(   n, m, i, j, u, s) {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
          n = split(uris, u, /[ \t]+/); m = split(suites, s, /[ \t]+/)
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) if (u[i] != "" && s[j] != "") print u[i], s[j]
        }
        types = uris = suites = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); value = $0; sub(/^[^:]*:[ \t]*/, "", value) }
      key == "types:" { types = value }
      key == "uris:" { uris = value }
      key == "suites:" { suites = value }
      key == "enabled:" { enabled = value }
      END { flush() }' "$f"
  done
}

codename="$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)"
sources="$(system_sources || true)"
release_re='^(bookworm|trixie|forky|duke|sid|oldstable|stable|testing|unstable)(-updates|-backports)?$'
mirror="${PROMETHEUS_STACK_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$(awk -v c="$codename" '$2 == c { print $1; exit }' <<<"$sources")"
  [ -n "$mirror" ] || mirror="$(awk -v re="$release_re" '$2 ~ re && $1 !~ /security/ { print $1; exit }' <<<"$sources")"
  [ -n "$mirror" ] || { mirror="http://deb.debian.org/debian"; say "no Debian mirror in /etc/apt/sources.list(.d): using $mirror"; }
fi
security="${PROMETHEUS_STACK_SECURITY_MIRROR:-}"
if [ -z "$security" ]; then
  security="$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$sources")"
  [ -n "$security" ] || security="http://deb.debian.org/debian-security"
fi
mirror="${mirror%/}"; security="${security%/}"

keyring="${PROMETHEUS_STACK_KEYRING:-}"
if [ -z "$keyring" ]; then
  for candidate in /usr/share/keyrings/debian-archive-keyring.pgp /usr/share/keyrings/debian-archive-keyring.gpg; do
    if [ -r "$candidate" ]; then keyring="$candidate"; break; fi
  done
fi
[ -n "$keyring" ] && [ -r "$keyring" ] || die "no Debian archive keyring (apt-get install debian-archive-keyring, or set PROMETHEUS_STACK_KEYRING)"

# ------------------------------------------------------------------ the private apt configuration

APT_DIR="$DEST/apt"
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/preferences.d" "$APT_DIR/state/lists/partial" \
         "$APT_DIR/cache/archives/partial" "$APT_DIR/debs" "$APT_DIR/log"
: >"$APT_DIR/state/status"
cat >"$APT_DIR/sources.list" <<EOF
# Written by observability/stack/install.sh: the pinned suite on this machine's Debian mirror.
deb [arch=$ARCH signed-by=$keyring] $mirror $SUITE main
deb [arch=$ARCH signed-by=$keyring] $mirror $SUITE-updates main
deb [arch=$ARCH signed-by=$keyring] $security $SUITE-security main
EOF
for also in $ALSO_SUITES; do
  echo "deb [arch=$ARCH signed-by=$keyring] $mirror $also main" >>"$APT_DIR/sources.list"
done
# On the command line, so nothing of the system's apt.conf.d (read after APT_CONFIG) overrides
# them; the rest of the system's configuration (proxies) still applies.
APT_OPTS=(
  -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
  -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
  -o "Dir::Etc::Preferences=$APT_DIR/preferences"
  -o "Dir::Etc::PreferencesParts=$APT_DIR/preferences.d"
  -o "Dir::State=$APT_DIR/state"
  -o "Dir::State::Lists=$APT_DIR/state/lists"
  -o "Dir::State::status=$APT_DIR/state/status"
  -o "Dir::Cache=$APT_DIR/cache"
  -o "Dir::Log=$APT_DIR/log"
  -o "APT::Architecture=$ARCH"
  -o "APT::Architectures=$ARCH"
  -o "Acquire::Languages=none"
  -o "APT::Get::List-Cleanup=true"
)
# As root apt downloads as the _apt user, who may not reach the project folder; the files are
# checked against the pinned sha256 whoever fetched them.
[ "$(id -u)" != 0 ] || APT_OPTS+=(-o "APT::Sandbox::User=root")

deb_file() {  # package version arch -> the file apt-get download writes
  echo "$APT_DIR/debs/${1}_${2//:/%3a}_${3}.deb"
}
deb_ok() {  # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# ------------------------------------------------------------------ download and check

need_download=()
while read -r pkg version arch sha; do
  deb_ok "$(deb_file "$pkg" "$version" "$arch")" "$sha" || need_download+=("$pkg $version $arch $sha")
done <<<"$PINS"

if [ "${#need_download[@]}" -gt 0 ]; then
  say "apt-get update: $SUITE${ALSO_SUITES:+ and $ALSO_SUITES} on $mirror (private configuration in $APT_DIR)"
  if ! apt-get "${APT_OPTS[@]}" -q update >"$APT_DIR/log/update.log" 2>&1; then
    cat "$APT_DIR/log/update.log" >&2
    die "apt-get update of $SUITE${ALSO_SUITES:+ and $ALSO_SUITES} on $mirror failed (see above)"
  fi
  if grep -qE '^(W|E): ' "$APT_DIR/log/update.log"; then grep -E '^(W|E): ' "$APT_DIR/log/update.log" >&2; fi
  specs=()
  for line in "${need_download[@]}"; do
    read -r pkg version arch sha <<<"$line"
    available="$(apt-cache "${APT_OPTS[@]}" madison "$pkg" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | sort -u | tr "\n" " " | sed "s/ $//")"
    case " $available " in
      *" $version "*) specs+=("$pkg=$version") ;;
      *) die "pinned $pkg $version ($arch) is not on $mirror $SUITE${ALSO_SUITES:+ or $ALSO_SUITES} (it has: ${available:-nothing}). \
Move the pin in $VERSIONS (version and sha256), or point PROMETHEUS_STACK_MIRROR at a mirror that has it \
(e.g. https://snapshot.debian.org/archive/debian/<date>/)." ;;
    esac
  done
  say "downloading ${specs[*]}"
  if ! (cd "$APT_DIR/debs" && apt-get "${APT_OPTS[@]}" -q download "${specs[@]}") >"$APT_DIR/log/download.log" 2>&1; then
    cat "$APT_DIR/log/download.log" >&2
    die "apt-get download ${specs[*]} failed (see above)"
  fi
  for line in "${need_download[@]}"; do
    read -r pkg version arch sha <<<"$line"
    file="$(deb_file "$pkg" "$version" "$arch")"
    [ -f "$file" ] || die "apt-get download left no $file"
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      rm -f "$file"
      die "sha256 of $pkg $version ($arch) is $got, the pin in $VERSIONS says $sha: refusing it"
    fi
  done
fi

# ------------------------------------------------------------------ unpack, expose, ask each one

rm -rf "$DEST/root.new" "$DEST/bin.new"
mkdir -p "$DEST/root.new" "$DEST/bin.new"
while read -r pkg version arch sha; do
  dpkg-deb -x "$(deb_file "$pkg" "$version" "$arch")" "$DEST/root.new"
done <<<"$PINS"

expose() {  # name-in-bin  binary-in-usr/bin
  [ -x "$DEST/root.new/usr/bin/$2" ] || die "the pinned packages hold no usr/bin/$2"
  ln -s "../root/usr/bin/$2" "$DEST/bin.new/$1"
}
expose prometheus prometheus
expose promtool promtool
expose prometheus-pushgateway prometheus-pushgateway
expose pushgateway prometheus-pushgateway
expose prometheus-alertmanager prometheus-alertmanager
expose alertmanager prometheus-alertmanager
expose amtool amtool
case " ${BINARIES[*]} " in *" victoria-metrics "*) expose victoria-metrics victoria-metrics ;; esac

rm -rf "$DEST/root.old" "$DEST/bin.old"
[ ! -e "$DEST/root" ] || mv "$DEST/root" "$DEST/root.old"
[ ! -e "$DEST/bin" ] || mv "$DEST/bin" "$DEST/bin.old"
mv "$DEST/root.new" "$DEST/root"
mv "$DEST/bin.new" "$DEST/bin"
rm -rf "$DEST/root.old" "$DEST/bin.old"

# Each binary must run here and report its package's upstream version.
version_of() { awk -v p="$1" '$1 == p { print $2; exit }' <<<"$PINS"; }
check_version() {  # binary package
  local pinned upstream reported
  pinned="$(version_of "$2")"
  upstream="${pinned#*:}"; upstream="${upstream%-*}"
  reported="$("$DEST/bin/$1" --version 2>&1 | head -n 1)" || die "$DEST/bin/$1 --version failed: $reported"
  case "$reported" in
    *"version $upstream "*|*"version $upstream") ;;
    *) die "$DEST/bin/$1 reports '$reported', expected version $upstream (package $2 $pinned)" ;;
  esac
  say "  $1: $reported"
}
check_version prometheus prometheus
check_version promtool promtool
check_version prometheus-pushgateway prometheus-pushgateway
check_version prometheus-alertmanager prometheus-alertmanager
check_version amtool prometheus-alertmanager
case " ${BINARIES[*]} " in
  *" victoria-metrics "*)
    "$DEST/bin/victoria-metrics" --version >/dev/null 2>&1 || die "$DEST/bin/victoria-metrics does not run here"
    got="$(dpkg-deb -f "$(deb_file victoria-metrics "$(version_of victoria-metrics)" "$ARCH")" Version)"
    [ "$got" = "$(version_of victoria-metrics)" ] || die "victoria-metrics package is $got, the pin is $(version_of victoria-metrics)"
    say "  victoria-metrics: package $got (Debian's build reports no version)" ;;
esac

if ! templates_in_place; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  [ -z "$sudo" ] || command -v sudo >/dev/null \
    || die "Alertmanager needs ${AM_TEMPLATES[*]} in $AM_SHARE (compiled into Debian's build) and writing there needs root: run this script as root once"
  say "copying Alertmanager's ${AM_TEMPLATES[*]} to $AM_SHARE${sudo:+ (sudo)}: Debian's build reads them from there"
  $sudo install -d -m 0755 "$AM_SHARE" \
    || die "could not create $AM_SHARE (Alertmanager loads no configuration without its templates)"
  for t in "${AM_TEMPLATES[@]}"; do
    $sudo install -m 0644 "$DEST/root$AM_SHARE/$t" "$AM_SHARE/$t" || die "could not write $AM_SHARE/$t"
  done
  templates_in_place || die "$AM_SHARE still lacks ${AM_TEMPLATES[*]}"
fi

printf '%s\n' "$STAMP_TEXT" >"$STAMP"
say "installed in $DEST/bin ($((SECONDS - started)) s)"
