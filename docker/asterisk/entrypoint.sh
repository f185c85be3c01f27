#!/bin/sh
# npv-guard Asterisk image: render /etc/asterisk from the environment, then run the command
# (default: asterisk -f). Every start renders the templates again, so a changed variable only
# needs a container restart. The templates are the repository's asterisk/base/ (shared with
# the real-Asterisk lab) plus the image's overlay asterisk/image/; asterisk/render fills them.
#
# Variables (defaults in brackets; docker/README.md has the full table):
#   SIP_BIND_ADDRESS [127.0.0.1]  SIP_PORT [5060]   MEDIA_ADDRESS [127.0.0.1]
#   RTP_START [10000]  RTP_END [20000]
#   CONTROL_ADDRESS [127.0.0.1]   where HTTP/ARI and AMI listen and FastAGI is reached
#   ARI_PORT [8088]  ARI_USERNAME [npvguard]  ARI_PASSWORD (required, or ARI_PASSWORD_FILE)
#   AMI_PORT [5038]  AMI_USERNAME [npvguard]  AMI_SECRET (or AMI_SECRET_FILE; empty: no AMI)
#   AMI_PERMIT [127.0.0.1/255.255.255.255]
#   AGI_PORT [4573]  GUARD_COMMAND [run]: run = ARI mode, agi = FastAGI mode
#   DIALER_MATCH [127.0.0.1]  CARRIER_HOST [127.0.0.1]  CARRIER_PORT [5070]
#   ASTERISK_VERBOSE [3]  ASTERISK_SYSTEM_NAME [npv-guard]
# A missing or malformed value stops the container with one line naming it (exit 78).
set -eu

TEMPLATES=${NPV_ASTERISK_TEMPLATES:-/usr/share/npv-guard-asterisk/config}
DIALPLAN=${NPV_ASTERISK_DIALPLAN:-/usr/share/npv-guard-asterisk/dialplan}
RENDER=${NPV_ASTERISK_RENDER:-/usr/share/npv-guard-asterisk/render}
# Where the rendered files go (another directory only for tests: Asterisk reads /etc/asterisk).
ETC=${NPV_ASTERISK_ETC:-/etc/asterisk}

die() {
    echo "npv-guard-asterisk: $*" >&2
    exit 78
}

# Secrets may come from files (Docker/Podman secrets).
for name in ARI_PASSWORD AMI_SECRET; do
    eval "file=\${${name}_FILE:-}"
    if [ -n "$file" ]; then
        [ -r "$file" ] || die "${name}_FILE: cannot read $file"
        value=$(cat "$file")
        eval "$name=\$value"
    fi
done

: "${SIP_BIND_ADDRESS:=127.0.0.1}" "${SIP_PORT:=5060}" "${MEDIA_ADDRESS:=127.0.0.1}"
: "${RTP_START:=10000}" "${RTP_END:=20000}"
: "${CONTROL_ADDRESS:=127.0.0.1}" "${ARI_PORT:=8088}" "${ARI_USERNAME:=npvguard}" "${ARI_PASSWORD:=}"
: "${AMI_PORT:=5038}" "${AMI_USERNAME:=npvguard}" "${AMI_SECRET:=}" "${AMI_PERMIT:=127.0.0.1/255.255.255.255}"
: "${AGI_PORT:=4573}" "${GUARD_COMMAND:=run}"
: "${DIALER_MATCH:=127.0.0.1}" "${CARRIER_HOST:=127.0.0.1}" "${CARRIER_PORT:=5070}"
: "${ASTERISK_VERBOSE:=3}" "${ASTERISK_SYSTEM_NAME:=npv-guard}"
if [ -n "$AMI_SECRET" ]; then AMI_ENABLED=yes; else AMI_ENABLED=no; AMI_SECRET=disabled; fi

# A value lands inside a config line: only characters that cannot start a comment, a new
# line, an include or a second value are accepted.
check() {  # check NAME KIND
    eval "value=\$$1"
    case $2 in
        port)
            case $value in '' | *[!0-9]*) die "$1=$value: not a port number" ;; esac
            [ "$value" -ge 1 ] && [ "$value" -le 65535 ] || die "$1=$value: not a port number"
            ;;
        address)  # a host name or IPv4/IPv6 address
            case $value in '' | *[!0-9A-Za-z.:_-]*) die "$1=$value: not an address" ;; esac ;;
        match)  # pjsip identify match: addresses or networks, comma-separated
            case $value in '' | *[!0-9A-Za-z.:/,_-]*) die "$1=$value: not a list of addresses/networks" ;; esac ;;
        name)
            case $value in '' | *[!0-9A-Za-z._-]*) die "$1=$value: only letters, digits, . _ - allowed" ;; esac ;;
        secret)
            [ -n "$value" ] || die "$1 is required (or ${1}_FILE)"
            [ "${#value}" -ge 8 ] || die "$1: at least 8 characters"
            case $value in *[!0-9A-Za-z._~+/=@%:!^*-]*) die "$1: only letters, digits and ._~+/=@%:!^*- allowed" ;; esac ;;
        mode)
            case $value in run | agi) ;; *) die "$1=$value: run (ARI mode) or agi (FastAGI mode)" ;; esac ;;
        level)
            case $value in '' | *[!0-9]*) die "$1=$value: a number" ;; esac ;;
    esac
}
check SIP_BIND_ADDRESS address; check SIP_PORT port; check MEDIA_ADDRESS address
check RTP_START port; check RTP_END port
[ "$RTP_START" -lt "$RTP_END" ] || die "RTP_START=$RTP_START must be below RTP_END=$RTP_END"
check CONTROL_ADDRESS address; check ARI_PORT port; check ARI_USERNAME name; check ARI_PASSWORD secret
check AMI_PORT port; check AMI_USERNAME name; check AMI_SECRET secret; check AMI_PERMIT match
check AGI_PORT port; check GUARD_COMMAND mode
check DIALER_MATCH match; check CARRIER_HOST address; check CARRIER_PORT port
check ASTERISK_VERBOSE level; check ASTERISK_SYSTEM_NAME name
# The FastAGI server for dialplan/npv-guard-agi.conf (NPV_GUARD_AGI): left empty for the
# include's own default, 127.0.0.1:4573.
if [ "$CONTROL_ADDRESS:$AGI_PORT" = "127.0.0.1:4573" ]; then AGI_SERVER=""; else AGI_SERVER="$CONTROL_ADDRESS:$AGI_PORT"; fi

# Fixed in the image (asterisk/variables): its directories, the SIP user agent and keep-alives,
# strict RTP, no ARI CORS origin, the AMI rights `npv-guard doctor` needs.
SIP_USER_AGENT=npv-guard-asterisk SIP_KEEP_ALIVE_INTERVAL=90 RTP_STRICT=yes ARI_ALLOWED_ORIGINS=
AMI_READ=system,call,dialplan,config,reporting AMI_WRITE=system,command,reporting
ASTERISK_ETC_DIR=/etc/asterisk ASTERISK_DB_DIR=/var/lib/asterisk ASTERISK_KEY_DIR=/var/lib/asterisk
ASTERISK_SPOOL_DIR=/var/spool/asterisk ASTERISK_RUN_DIR=/var/run/asterisk
ASTERISK_LOG_DIR=/var/log/asterisk ASTERISK_CACHE_DIR=/var/cache/asterisk

export SIP_BIND_ADDRESS SIP_PORT MEDIA_ADDRESS RTP_START RTP_END CONTROL_ADDRESS \
    ARI_PORT ARI_USERNAME ARI_PASSWORD AMI_ENABLED AMI_PORT AMI_USERNAME AMI_SECRET AMI_PERMIT \
    AGI_PORT AGI_SERVER GUARD_COMMAND DIALER_MATCH CARRIER_HOST CARRIER_PORT ASTERISK_VERBOSE ASTERISK_SYSTEM_NAME \
    SIP_USER_AGENT SIP_KEEP_ALIVE_INTERVAL RTP_STRICT ARI_ALLOWED_ORIGINS AMI_READ AMI_WRITE \
    ASTERISK_ETC_DIR ASTERISK_DB_DIR ASTERISK_KEY_DIR ASTERISK_SPOOL_DIR ASTERISK_RUN_DIR \
    ASTERISK_LOG_DIR ASTERISK_CACHE_DIR

[ -d "$TEMPLATES" ] || die "no templates in $TEMPLATES"
[ -w "$ETC" ] || die "$ETC is not writable by $(id -un)"
umask 027
# ${NAME} is replaced only for the names of asterisk/variables; dialplan variables (${EXTEN}, ...)
# stay as they are.
perl "$RENDER" "$ETC" "$TEMPLATES" || exit 78
# The project's dialplan includes, verbatim.
for file in "$DIALPLAN"/*.conf; do
    [ -e "$file" ] && cp "$file" "$ETC/"
done
mkdir -p /var/run/asterisk 2>/dev/null || true
mkdir -p "$ASTERISK_LOG_DIR/cdr-custom" 2>/dev/null || true  # cdr_custom.conf writes the CDRs there

echo "npv-guard-asterisk: SIP ${SIP_BIND_ADDRESS}:${SIP_PORT}/udp (media ${MEDIA_ADDRESS}, RTP ${RTP_START}-${RTP_END})," \
    "ARI http://${CONTROL_ADDRESS}:${ARI_PORT}, AMI ${AMI_ENABLED} ${CONTROL_ADDRESS}:${AMI_PORT}," \
    "dialer ${DIALER_MATCH}, carrier ${CARRIER_HOST}:${CARRIER_PORT}, guard mode ${GUARD_COMMAND}" >&2
exec "$@"
