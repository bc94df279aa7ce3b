#!/bin/sh
# cairn agent: EC2 user-data (or any cloud-init "#!" script). Downloads the agent, checks its
# SHA-256, enrolls it with the collector, installs and starts the hardened systemd unit, and runs
# the readiness self-test. Set the variables below (or export them before running the script).
#
# Testing and images without systemd: CAIRN_ROOT installs under a prefix instead of /, and
# CAIRN_NO_SYSTEMD=1 (or no running systemd) starts the agent directly, in the background.
set -eu

: "${CAIRN_AGENT_URL:=https://downloads.example.com/cairn/0.1.0/cairn-agent-x86_64-linux}"
: "${CAIRN_AGENT_SHA256:=REPLACE_WITH_THE_AGENT_SHA256}"
: "${CAIRN_COLLECTOR:=collector.example.internal:4433}"
: "${CAIRN_CA_SHA256:=REPLACE_WITH_THE_CA_FINGERPRINT}"
# The enrollment token, inline; or leave it empty and name an SSM SecureString parameter that
# holds it (read with the instance role: ssm:GetParameter and kms:Decrypt).
: "${CAIRN_ENROLL_TOKEN:=}"
: "${CAIRN_TOKEN_SSM_PARAMETER:=}"
: "${CAIRN_ROOT:=}"
: "${CAIRN_NO_SYSTEMD:=0}"

BIN="$CAIRN_ROOT/usr/local/bin/cairn-agent"
STATE="$CAIRN_ROOT/var/lib/cairn-agent"
UNIT="$CAIRN_ROOT/etc/systemd/system/cairn-agent.service"
DEFAULTS="$CAIRN_ROOT/etc/default/cairn-agent"
LOG="$CAIRN_ROOT/var/log/cairn-agent.log"
PIDFILE="$CAIRN_ROOT/run/cairn-agent.pid"

say() { echo "cairn-install: $*" >&2; }
die() { say "error: $*"; exit 1; }

mkdir -p "$(dirname "$BIN")" "$(dirname "$UNIT")" "$(dirname "$DEFAULTS")" \
    "$(dirname "$LOG")" "$(dirname "$PIDFILE")"
mkdir -p -m 0700 "$STATE"

# 1. Download and verify the agent.
tmp="$BIN.download.$$"
trap 'rm -f "$tmp"' EXIT
say "downloading $CAIRN_AGENT_URL"
if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 5 --retry-delay 2 -o "$tmp" "$CAIRN_AGENT_URL" || die "download of $CAIRN_AGENT_URL failed"
elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$tmp" "$CAIRN_AGENT_URL" || die "download of $CAIRN_AGENT_URL failed"
else
    die "neither curl nor wget is installed"
fi
echo "$CAIRN_AGENT_SHA256  $tmp" | sha256sum -c - >/dev/null 2>&1 ||
    die "SHA-256 of $CAIRN_AGENT_URL is $(sha256sum "$tmp" | cut -d' ' -f1), expected $CAIRN_AGENT_SHA256: not installing it"
chmod 0755 "$tmp"
mv -f "$tmp" "$BIN"
say "installed $BIN (SHA-256 verified)"

# 2. Configuration for the unit.
umask 077
cat > "$DEFAULTS" <<CONF
# Read by cairn-agent.service (README: agent.toml holds the agent's own settings).
CAIRN_AGENT_STATE=/var/lib/cairn-agent
CAIRN_LOG=info
CONF

# 3. Enroll once (a re-run of user-data keeps the existing identity).
if [ -f "$STATE/agent.toml" ]; then
    say "already enrolled ($STATE/agent.toml exists)"
else
    token="$CAIRN_ENROLL_TOKEN"
    if [ -z "$token" ] && [ -n "$CAIRN_TOKEN_SSM_PARAMETER" ]; then
        command -v aws >/dev/null 2>&1 || die "CAIRN_TOKEN_SSM_PARAMETER is set but the aws CLI is not installed"
        token=$(aws ssm get-parameter --with-decryption --name "$CAIRN_TOKEN_SSM_PARAMETER" \
            --query Parameter.Value --output text) || die "cannot read SSM parameter $CAIRN_TOKEN_SSM_PARAMETER"
    fi
    [ -n "$token" ] || die "no enrollment token: set CAIRN_ENROLL_TOKEN or CAIRN_TOKEN_SSM_PARAMETER"
    CAIRN_ENROLL_TOKEN="$token" "$BIN" enroll --state-dir "$STATE" \
        --collector "$CAIRN_COLLECTOR" --ca-sha256 "$CAIRN_CA_SHA256" >/dev/null ||
        die "enrollment with $CAIRN_COLLECTOR failed"
fi

# 4. Install the unit (the same text as deploy/systemd/cairn-agent.service) and start the agent.
cat > "$UNIT" <<'UNIT_FILE'
# cairn agent: hardened systemd unit. Install as /etc/systemd/system/cairn-agent.service, then
# `systemctl daemon-reload && systemctl enable --now cairn-agent`. Enroll first (README).
#
# The agent must read other processes' memory, block devices and /proc/kcore, and load BPF, so
# it runs as root; everything it does not need is taken away: the capability bounding set holds
# only what it uses, the file system is read-only except its state directory, and it cannot
# gain privileges, load modules or change the clock. Settings left out on purpose:
# PrivateDevices (hides the disks), ProtectKernelTunables (makes /proc/kcore inaccessible),
# ProtectProc/ProcSubset (hide other processes), and a SystemCallFilter with @debug (ptrace,
# process_vm_readv).
[Unit]
Description=cairn agent: host memory and disk evidence for incident response
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/cairn-agent
ExecStart=/usr/local/bin/cairn-agent run --state-dir /var/lib/cairn-agent
Restart=always
RestartSec=5
# Stopped with SIGTERM before the network goes down (After=network-online.target): a host
# marked for a last breath sends its bounded collection (last_breath_secs, 20 s) first.
TimeoutStopSec=30
User=root

# CAP_BPF, CAP_PERFMON: the eBPF sensor; CAP_SYS_ADMIN: BPF before 5.8, mounting tracefs;
# CAP_SYS_PTRACE: process memory; CAP_DAC_READ_SEARCH: files and disks; CAP_SYS_RAWIO:
# /proc/kcore and /dev/mem; CAP_SYS_RESOURCE: RLIMIT_MEMLOCK for BPF maps before 5.11.
CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYS_RAWIO CAP_SYS_RESOURCE
AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_SYS_RAWIO CAP_SYS_RESOURCE
NoNewPrivileges=yes
LimitMEMLOCK=infinity

ProtectSystem=strict
StateDirectory=cairn-agent
StateDirectoryMode=0700
ReadWritePaths=/var/lib/cairn-agent
ProtectHome=read-only
PrivateTmp=yes
UMask=0077

ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=~@clock @cpu-emulation @module @obsolete @reboot @swap
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
UNIT_FILE
chmod 0644 "$UNIT"
if [ "$CAIRN_NO_SYSTEMD" != 1 ] && [ -z "$CAIRN_ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now cairn-agent.service
    say "cairn-agent.service enabled and started"
else
    say "starting the agent without systemd (log: $LOG)"
    nohup "$BIN" run --state-dir "$STATE" >>"$LOG" 2>&1 </dev/null &
    echo $! > "$PIDFILE"
fi

# 5. Readiness: what this host can and cannot give an investigation, reported to the collector.
if "$BIN" selftest --state-dir "$STATE"; then
    say "self-test passed"
else
    say "self-test found failures (listed above, each with its remediation); the agent keeps running"
fi
