#!/bin/sh
# Render one of opensips/*.cfg for this container, check it, and run OpenSIPS in the foreground.
#
#   render-cfg.sh /etc/opensips/site/edge.cfg            # render to $OPENSIPS_RENDER_DIR, check, exec opensips -F
#   render-cfg.sh opensips/ai-node.cfg --print           # render to stdout only (used by tests/deploy)
#
# The configs in opensips/ are written for a single-host lab; every line that differs per site is
# tagged "# SITE" (opensips/README.md, "Site settings"). Only those lines change here, each from one
# environment variable, so the file telco engineers review is the file that runs:
#
#   socket=...                       # SITE  <- OPENSIPS_SOCKET     e.g. udp:10.20.0.11:5060
#   modparam(..., "db_url", "...")   # SITE  <- OPENSIPS_DB_URL     postgres://user:password@host/db
#   if ($si == "127.0.0.1")          # SITE  <- OPENSIPS_EDGE_IPS   edge source addresses, space separated
#
# A SITE line this script does not know fails the start instead of running with lab values. Two
# global parameters are prepended because a container has no syslog: logs go to stderr.
# -f: no pathname expansion, so an address list such as '*' is never expanded into file names.
set -euf

die() {
	echo "render-cfg: $*" >&2
	exit 2
}

# Escape a value for the replacement side of sed's s|...|...| command.
sed_escape() {
	printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'
}

# Values land inside the OpenSIPS script: refuse anything that could end a string or a line there.
check_value() {
	case "$2" in
	*'"'* | *"
"*) die "$1 must not contain a double quote or a newline" ;;
	esac
}

[ $# -ge 1 ] || die "usage: render-cfg.sh SOURCE.cfg [--print]"
source_cfg=$1
print_only=${2:-}
[ -r "$source_cfg" ] || die "cannot read $source_cfg"

script=""

if grep -q '^socket=.*# SITE' "$source_cfg"; then
	[ -n "${OPENSIPS_SOCKET:-}" ] || die "$source_cfg has a SITE socket line: set OPENSIPS_SOCKET (e.g. udp:10.20.0.11:5060)"
	check_value OPENSIPS_SOCKET "$OPENSIPS_SOCKET"
	case "$OPENSIPS_SOCKET" in
	udp:* | tcp:*) ;;
	*) die "OPENSIPS_SOCKET must start with udp: or tcp:, got '$OPENSIPS_SOCKET'" ;;
	esac
	script="${script}s|^socket=[^#]*# SITE|socket=$(sed_escape "$OPENSIPS_SOCKET")   # SITE (rendered)|;"
fi

if grep -q '"db_url", *"[^"]*").*# SITE' "$source_cfg"; then
	[ -n "${OPENSIPS_DB_URL:-}" ] || die "$source_cfg has SITE db_url lines: set OPENSIPS_DB_URL (postgres://...)"
	check_value OPENSIPS_DB_URL "$OPENSIPS_DB_URL"
	case "$OPENSIPS_DB_URL" in
	postgres://*) ;;
	*) die "OPENSIPS_DB_URL must be a postgres:// URL" ;;
	esac
	script="${script}s|\"db_url\", *\"[^\"]*\")\\([^#]*\\)# SITE|\"db_url\", \"$(sed_escape "$OPENSIPS_DB_URL")\")\\1# SITE (rendered)|;"
fi

if grep -q 'if (\$si == "[^"]*").*# SITE' "$source_cfg"; then
	[ -n "${OPENSIPS_EDGE_IPS:-}" ] || die "$source_cfg checks the edge's address: set OPENSIPS_EDGE_IPS (space separated)"
	condition=""
	for ip in $OPENSIPS_EDGE_IPS; do
		# Addresses only (IPv4 or IPv6 text): nothing else may reach the script.
		case "$ip" in
		*[!0-9a-fA-F:.]*) die "OPENSIPS_EDGE_IPS holds '$ip', which is not an IP address" ;;
		esac
		condition="${condition:+$condition || }\$si == \"$ip\""
	done
	script="${script}s|if (\\\$si == \"[^\"]*\")\\([^#]*\\)# SITE|if ($(sed_escape "$condition"))\\1# SITE (rendered)|;"
fi

render() {
	printf '%s\n' \
		"# Rendered by deploy/opensips/render-cfg.sh from $source_cfg: only '# SITE' lines differ." \
		"# Containers have no syslog: OpenSIPS logs to stderr." \
		"stderror_enabled=yes" \
		"syslog_enabled=no" \
		""
	sed -e "$script" "$source_cfg"
}

rendered=$(render)

# Every SITE line outside comments must have been rendered; a new one needs a variable above.
leftover=$(printf '%s\n' "$rendered" | grep -n '^[^#]*# SITE' | grep -v '# SITE (rendered)' || true)
[ -z "$leftover" ] || die "SITE line(s) this script cannot render: $leftover"

if [ "$print_only" = "--print" ]; then
	printf '%s\n' "$rendered"
	exit 0
fi

out_dir=${OPENSIPS_RENDER_DIR:-/tmp}
out="$out_dir/$(basename "$source_cfg")"
# The file carries the database password: readable by this user only.
umask 077
printf '%s\n' "$rendered" >"$out"
opensips -C -f "$out" || die "opensips -C rejected the rendered $out"
exec opensips -F -f "$out"
