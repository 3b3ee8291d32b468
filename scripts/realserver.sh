#!/bin/sh
# realserver.sh: make this host a direct-routing real server (LVS-DR, lb-xdp) for some VIPs.
#
#   realserver.sh start  VIP...   put each VIP on lo and stop answering ARP for it
#   realserver.sh stop   VIP...   undo it
#   realserver.sh status VIP...   say, per VIP, whether it is set up; exit 0 if all are, else 3
#
# VIPs are IPv4 or IPv6 addresses, without a prefix length. start and stop are idempotent:
# starting twice leaves the same state, stopping what is stopped is not an error.
#
# Exit status (LSB init-script conventions): 0 done; 1 failed; 2 bad usage or address;
# 3 (status) some VIP is not fully set up; 4 not root (start, stop); 5 ip(8) is missing.
#
# Why these settings
# ------------------
# With direct routing the director forwards a client's packet unchanged (its destination is
# still the VIP) to this host's MAC address, and this host answers the client directly. So the
# VIP must be a local address here, which is what the /32 (IPv4) or /128 (IPv6) on lo does, but
# this host must never answer ARP for it: the LAN would then send VIP traffic here instead of to
# the director (or to keepalived's VRRP master).
#
#   arp_ignore=1    answer an ARP request only if its target address is configured on the
#                   interface the request arrived on. Requests arrive on the LAN interface,
#                   never on lo, so the VIP (on lo) is never answered.
#   arp_announce=2  in the ARP requests this host sends, always use the best address of the
#                   outgoing interface as the sender, never the VIP (which would teach the LAN
#                   "VIP is at this MAC").
#
# The kernel uses max(conf/all/X, conf/IFACE/X) for both, IFACE being the interface the request
# arrives on or leaves from. So "all" is the setting that matters: it covers eth0, bonds, VLANs
# and interfaces created later without naming them. lo's own value changes nothing (no ARP ever
# arrives on lo); it is set too, as the production guide's script does, so that hosts set up
# either way look the same. The sysctls are set before the VIPs are added (and restored after
# they are removed), so that there is no moment when the VIP is on lo and answered by ARP.
#
# IPv6 needs no sysctl: Linux answers a neighbour solicitation only for an address of the
# interface the solicitation arrives on (the target is looked up strictly on that device), so a
# /128 on lo is never announced on the LAN; lo does no duplicate address detection either.
# Packets for the VIP are still accepted on every interface (Linux's weak host model), as for
# IPv4.
#
# State: $LB_XDP_REALSERVER_STATE_DIR (default /run/lb-xdp-realserver), one directory per network
# namespace (net-<inode>), holds a file per VIP this script started, and arp.saved, the ARP
# settings found before the first IPv4 VIP. stop restores them (normally 0) once no IPv4 VIP
# started by this script remains on lo.

set -eu

# ip(8) lives in sbin on some systems, which a non-root PATH may lack (status needs no root).
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"
prog=${0##*/}
conf=/proc/sys/net/ipv4/conf

usage() {
    cat <<EOF
usage: $prog start|stop|status VIP...

  start   put each VIP on lo (/32, /128 for IPv6); for IPv4 VIPs set
          net.ipv4.conf.{all,lo}.arp_ignore=1 and arp_announce=2
  stop    remove the VIPs from lo; restore arp_ignore/arp_announce when no IPv4 VIP
          started by $prog remains
  status  print per VIP whether it is on lo and whether ARP answers are suppressed;
          exit 0 if every VIP is fully set up, 3 otherwise

Exit status: 0 done, 1 failed, 2 bad usage or address, 3 not set up (status),
4 not root, 5 ip(8) missing.
EOF
}

die() {
    code=$1
    shift
    printf '%s: %s\n' "$prog" "$*" >&2
    exit "$code"
}

# Prints 4 or 6 for a valid unicast VIP; fails with a message otherwise.
family() {
    case $1 in
    */*) die 2 "$1: give the address without a prefix length (it goes on lo as a host address)" ;;
    *:*)
        case $1 in
        *[!0-9A-Fa-f:.]*) die 2 "$1 is not an IPv4 or IPv6 address" ;;
        esac
        ip -6 addr show to "$1" >/dev/null 2>&1 || die 2 "$1 is not an IPv4 or IPv6 address"
        case $1 in
        :: | ::1 | [Ff][Ff]*) die 2 "$1 is not a unicast address a VIP can have" ;;
        esac
        echo 6
        ;;
    *)
        is_ipv4 "$1" || die 2 "$1 is not an IPv4 or IPv6 address"
        first=${1%%.*}
        if [ "$first" -eq 0 ] || [ "$first" -eq 127 ] || [ "$first" -ge 224 ]; then
            die 2 "$1 is not a unicast address a VIP can have"
        fi
        echo 4
        ;;
    esac
}

# Strict dotted quad: four decimal numbers 0-255 without leading zeros.
is_ipv4() {
    case $1 in
    "" | *[!0-9.]* | .* | *. | *..*) return 1 ;;
    esac
    saved_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086 # split on dots on purpose; only digits and dots are left
    set -- $1
    IFS=$saved_ifs
    [ $# -eq 4 ] || return 1
    for octet; do
        case $octet in
        0?*) return 1 ;;
        esac
        [ ${#octet} -le 3 ] && [ "$octet" -le 255 ] || return 1
    done
}

# Host prefix length of a family.
hostlen() {
    if [ "$1" = 6 ]; then echo 128; else echo 32; fi
}

# Prints the VIP as ip(8) writes it if it is on lo as a host address (/32 or /128).
on_lo() {
    len=$(hostlen "$2")
    ip -o -"$2" addr show dev lo to "$1/$len" 2>/dev/null |
        awk -v len="$len" '{ split($4, a, "/"); if (a[2] == len) { print a[1]; exit } }'
}

sysctl_get() { cat "$conf/$1/$2"; }
sysctl_put() { printf '%s\n' "$3" >"$conf/$1/$2"; }

# Whether ARP answers for the VIPs on lo are off on every interface (see the top).
arp_suppressed() {
    [ "$(sysctl_get all arp_ignore)" -ge 1 ] && [ "$(sysctl_get all arp_announce)" -ge 2 ]
}

# IPv4 VIPs started by this script that are still on lo. Forgets VIPs that are gone.
managed_ipv4() {
    for f in "$state"/*; do
        [ -f "$f" ] || continue
        vip=${f##*/}
        case $vip in arp.saved) continue ;; esac
        fam=$(cat "$f")
        if [ -z "$(on_lo "$vip" "$fam")" ]; then
            rm -f "$f"
        elif [ "$fam" = 4 ]; then
            echo "$vip"
        fi
    done
}

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
action=$1
shift
case $action in
start | stop | status) ;;
-h | --help | help)
    usage
    exit 0
    ;;
*)
    printf '%s: unknown action "%s"\n' "$prog" "$action" >&2
    usage >&2
    exit 2
    ;;
esac
[ $# -ge 1 ] || die 2 "$action: give at least one VIP (usage: $prog start|stop|status VIP...)"
command -v ip >/dev/null 2>&1 || die 5 "ip(8) not found: install iproute2"
if [ "$action" != status ] && [ "$(id -u)" != 0 ]; then
    die 4 "$action changes addresses and sysctls: run it as root"
fi

# Validate every VIP before changing anything.
vips=
has_ipv4=no
for vip; do
    fam=$(family "$vip") || exit 2
    [ "$fam" = 4 ] && has_ipv4=yes
    vips="$vips $fam/$vip"
done

netns=$(readlink /proc/self/ns/net 2>/dev/null | tr -cd 0-9) || netns=
state_root=${LB_XDP_REALSERVER_STATE_DIR:-/run/lb-xdp-realserver}
state=$state_root/net-${netns:-unknown}

if [ "$action" = status ]; then
    status=0
    for item in $vips; do
        fam=${item%%/*}
        vip=${item#*/}
        if [ -n "$(on_lo "$vip" "$fam")" ]; then lo=yes; else lo=no; status=3; fi
        if [ "$fam" = 4 ]; then
            ai=$(sysctl_get all arp_ignore)
            an=$(sysctl_get all arp_announce)
            if arp_suppressed; then
                arp="suppressed (all.arp_ignore=$ai, all.arp_announce=$an)"
            else
                arp="NOT suppressed (all.arp_ignore=$ai, all.arp_announce=$an; need >= 1 and >= 2)"
                status=3
            fi
            echo "$vip: on lo: $lo; ARP answers: $arp"
        else
            echo "$vip: on lo: $lo; neighbour solicitations: not answered (an address on lo)"
        fi
    done
    exit "$status"
fi

mkdir -p "$state"
# One start/stop at a time (flock is optional: util-linux).
if command -v flock >/dev/null 2>&1; then
    exec 9<"$state_root"
    flock 9
fi

if [ "$action" = start ]; then
    if [ "$has_ipv4" = yes ]; then
        if [ ! -f "$state/arp.saved" ] && [ -z "$(managed_ipv4)" ]; then
            {
                echo "all $(sysctl_get all arp_ignore) $(sysctl_get all arp_announce)"
                echo "lo $(sysctl_get lo arp_ignore) $(sysctl_get lo arp_announce)"
            } >"$state/arp.saved.new"
            mv "$state/arp.saved.new" "$state/arp.saved"
        fi
        # Before the VIPs: never a moment with a VIP on lo that ARP answers.
        for dev in all lo; do
            sysctl_put "$dev" arp_ignore 1
            sysctl_put "$dev" arp_announce 2
        done
    fi
    ip link set lo up
    for item in $vips; do
        fam=${item%%/*}
        vip=${item#*/}
        len=$(hostlen "$fam")
        if [ "$fam" = 6 ]; then
            ip -6 addr replace "$vip/$len" dev lo nodad || die 1 "cannot add $vip/$len to lo"
        else
            ip -4 addr replace "$vip/$len" dev lo || die 1 "cannot add $vip/$len to lo"
        fi
        canon=$(on_lo "$vip" "$fam")
        [ -n "$canon" ] || die 1 "$vip/$len was added to lo but is not there"
        echo "$fam" >"$state/$canon"
        echo "$vip: on lo"
    done
    [ "$has_ipv4" = no ] || echo "ARP answers for the VIPs on lo: suppressed (arp_ignore=1, arp_announce=2)"
    exit 0
fi

# stop: the VIPs first, then the sysctls.
for item in $vips; do
    fam=${item%%/*}
    vip=${item#*/}
    canon=$(on_lo "$vip" "$fam")
    if [ -n "$canon" ]; then
        ip -"$fam" addr del "$canon/$(hostlen "$fam")" dev lo || die 1 "cannot remove $vip from lo"
        rm -f "$state/$canon"
        echo "$vip: removed from lo"
    else
        echo "$vip: not on lo"
    fi
done
remaining=$(managed_ipv4)
if [ -f "$state/arp.saved" ]; then
    if [ -z "$remaining" ]; then
        while read -r dev ignore announce; do
            sysctl_put "$dev" arp_ignore "$ignore"
            sysctl_put "$dev" arp_announce "$announce"
        done <"$state/arp.saved"
        rm -f "$state/arp.saved"
        echo "ARP settings restored (all and lo): arp_ignore and arp_announce as before start"
    else
        echo "ARP answers stay suppressed for the VIPs still on lo:" $remaining
    fi
fi
rmdir "$state" 2>/dev/null || true
exit 0
