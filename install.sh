#!/usr/bin/env bash
# Install microfedi as a systemd service on Debian / Raspberry Pi OS, behind
# Caddy (which gets TLS certificates for every domain by itself).
# Safe to run again: that upgrades microfedi and adds what is new, nothing else.
# `sudo ./install.sh --help` says how.
set -Eeuo pipefail

readonly SERVICE_USER=microfedi
readonly DATA_DIR=/var/lib/microfedi
readonly PREFIX=/opt/microfedi
readonly PIPX_HOME_DIR=$PREFIX/pipx
readonly BIN_DIR=$PREFIX/bin
readonly SOURCE_STAGE=$PREFIX/source
readonly MICROFEDI_BIN=$BIN_DIR/microfedi
readonly UNIT_NAME=microfedi.service
readonly UNIT_FILE=/etc/systemd/system/$UNIT_NAME
readonly WRAPPER=/usr/local/bin/microfedi
readonly WRAPPER_MARK="# Installed by microfedi's install.sh"
readonly OPTIONS_FILE=/etc/microfedi/install.conf
readonly CADDYFILE=/etc/caddy/Caddyfile
readonly CADDY_DIR=/etc/caddy/microfedi
readonly CADDY_SNIPPET=$CADDY_DIR/microfedi.caddy
readonly CADDY_IMPORT="import $CADDY_DIR/*.caddy"
readonly DISCOVERY_PATHS=(webfinger host-meta nodeinfo)
# Every path the installer reads or writes is taken under this directory (like
# DESTDIR), so tests and packagers can run it against a scratch tree.
readonly ROOT=${MICROFEDI_INSTALL_ROOT:-}

usage() {
    cat <<'EOF'
Usage: sudo ./install.sh [OPTIONS]

Install microfedi on Debian or Raspberry Pi OS (bookworm or newer): pipx into
/opt/microfedi, owned by the system user `microfedi`; data in /var/lib/microfedi;
a systemd service listening on 127.0.0.1:PORT; and a Caddy site for every host
microfedi serves, so TLS certificates come automatically. Running it again is
safe: it upgrades microfedi, adds the domains you name, and rewrites only the
files whose content changed.

Options:
  --source PATH_OR_SPEC   What pipx installs: a source directory, a wheel, or a
                          pip spec such as `microfedi==0.2.0`. Default: the
                          directory holding this script if it is a microfedi
                          checkout, else `microfedi` from PyPI.
  --domain DOMAIN         A domain to serve; added with `microfedi domain add` if
                          missing. Repeat for more. DOMAIN=SERVICE means handles
                          @user@DOMAIN whose actor URLs live on SERVICE (DOMAIN
                          only redirects /.well-known/{webfinger,host-meta,nodeinfo}).
  --port PORT             Local port microfedi listens on, behind Caddy
                          (default 8000, or the port of the previous run).
  --no-caddy              Neither install nor configure Caddy (and remove the
                          sites an earlier run gave it); bring your own proxy.
  --caddy                 Configure Caddy again after an earlier --no-caddy.
  --caddy-handle-redirects
                          Let Caddy serve split handle domains too (DOMAIN in
                          DOMAIN=SERVICE) with the three discovery redirects.
                          Default: print the redirects for your own web host.
  --no-caddy-handle-redirects
                          Undo an earlier --caddy-handle-redirects.
  --dry-run               Print every command and every file the install would
                          run and write; change nothing.
  --uninstall             Stop and remove the service, the program, the `microfedi`
                          command and the Caddy sites. Keeps the data dir and the
                          `microfedi` user.
  -h, --help              Show this help.

Options also take the form --option=VALUE. --port and the Caddy choices are
remembered in /etc/microfedi/install.conf, so a later run needs only the new
--domain flags: `sudo ./install.sh --domain new.example` adds the domain and
its Caddy site and leaves the rest as it was.

After installing, manage microfedi with `sudo microfedi ...` (it runs as the
service user on /var/lib/microfedi), e.g. `sudo microfedi user add you@your.domain`.

Exit status: 0 done; 1 a step failed (the message says which); 2 bad usage.
Environment: MICROFEDI_INSTALL_ROOT=DIR takes every path under DIR (tests).
EOF
}

# ---------------------------------------------------------------- messages

die() {
    echo "install.sh: error: $1" >&2
    exit "${2:-1}"
}

usage_error() {
    echo "install.sh: $1 (see ./install.sh --help)" >&2
    exit 2
}

step() {
    echo "==> $*"
}

# An unexpected failure under `set -e` still ends with one line naming the
# command; only the top-level shell says it, not each subshell on the way out.
on_error() {
    ((BASH_SUBSHELL == 0)) && echo "install.sh: error: command failed with status $1: $2" >&2
    return 0
}
trap 'on_error $? "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------- options

SOURCE=""
PORT=""
CADDY=""
HANDLE_REDIRECTS=""
DRY_RUN=0
UNINSTALL=0
DOMAIN_SPECS=()

# Domain names end up in Caddy and systemd files, so only DNS characters pass.
valid_domain() {
    [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$ ]]
}

add_domain_spec() {
    local spec=${1,,} name service=""
    name=${spec%%=*}
    [[ $spec == *=* ]] && service=${spec#*=}
    valid_domain "$name" || usage_error "--domain $1: '$name' is not a domain name (ASCII letters, digits, hyphens, dots; use the xn-- form for others)"
    if [[ -n $service ]]; then
        valid_domain "$service" || usage_error "--domain $1: '$service' is not a domain name"
        [[ $service == "$name" ]] && service=""
    fi
    DOMAIN_SPECS+=("$name=$service")
}

parse_args() {
    local option value
    while (($#)); do
        option=$1
        if [[ $option == --*=* ]]; then
            option=${option%%=*}
            [[ $option =~ ^--(source|domain|port)$ ]] || usage_error "$option takes no value"
            set -- "$option" "${1#*=}" "${@:2}"
        fi
        value=""
        if [[ $option =~ ^--(source|domain|port)$ ]]; then
            if (($# < 2)) || [[ -z $2 ]]; then
                usage_error "$option needs a value"
            fi
            value=$2
            shift
        fi
        shift
        case $option in
            -h | --help) usage; exit 0 ;;
            --source) SOURCE=$value ;;
            --domain) add_domain_spec "$value" ;;
            --port)
                if ! [[ $value =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
                    usage_error "--port $value: give a port number from 1 to 65535"
                fi
                PORT=$((10#$value))
                ;;
            --no-caddy) CADDY=no ;;
            --caddy) CADDY=yes ;;
            --caddy-handle-redirects) HANDLE_REDIRECTS=yes ;;
            --no-caddy-handle-redirects) HANDLE_REDIRECTS=no ;;
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            *) usage_error "unknown option: $option" ;;
        esac
    done
}

# Options not given on the command line keep the value of the previous run.
load_saved_options() {
    local file key value
    file=$(p "$OPTIONS_FILE")
    [[ -f $file ]] || return 0
    while IFS='=' read -r key value; do
        if [[ $key == port && -z $PORT && $value =~ ^[0-9]{1,5}$ ]]; then
            PORT=$value
        elif [[ $key == caddy && -z $CADDY && $value =~ ^(yes|no)$ ]]; then
            CADDY=$value
        elif [[ $key == caddy_handle_redirects && -z $HANDLE_REDIRECTS && $value =~ ^(yes|no)$ ]]; then
            HANDLE_REDIRECTS=$value
        fi
    done <"$file"
}

apply_defaults() {
    PORT=${PORT:-8000}
    CADDY=${CADDY:-yes}
    HANDLE_REDIRECTS=${HANDLE_REDIRECTS:-no}
    SOURCE_IS_PATH=0
    if [[ -z $SOURCE ]]; then
        local script=${BASH_SOURCE[0]:-} here=""
        [[ -f $script ]] && here=$(cd "$(dirname "$script")" && pwd)
        if [[ -n $here ]] && grep -qs '^name = "microfedi"' "$here/pyproject.toml"; then
            SOURCE=$here
            SOURCE_IS_PATH=1
        else
            SOURCE=microfedi
        fi
    # Like pip: a path has a slash or an archive suffix; anything else is a spec.
    elif [[ $SOURCE != *://* && ($SOURCE == */* || $SOURCE == . || $SOURCE == .. || $SOURCE =~ \.(whl|tar\.gz|zip)$) ]]; then
        [[ -e $SOURCE ]] || usage_error "--source $SOURCE: no such file or directory"
        SOURCE=$(realpath "$SOURCE")
        SOURCE_IS_PATH=1
    fi
}

# ---------------------------------------------------------------- doing things

# The real path of an installed file (under MICROFEDI_INSTALL_ROOT when set).
p() {
    printf '%s%s' "$ROOT" "$1"
}

# Print a command, then run it unless this is a dry run; a failure ends the
# install with the command's own words above and one line naming it.
run() {
    local line status=0
    printf -v line '%q ' "$@"
    line=${line% }
    echo "+ $line"
    ((DRY_RUN)) && return 0
    "$@" || status=$?
    ((status == 0)) || die "this failed with status $status: $line"
}

# The environment microfedi and pipx run in as the service user. HOME points at
# the program dir so pip's cache and pipx's logs stay out of the data dir.
service_env() {
    printf '%s\n' env "HOME=$(p "$PREFIX")" "MICROFEDI_DATA_DIR=$(p "$DATA_DIR")" \
        "PIPX_HOME=$(p "$PIPX_HOME_DIR")" "PIPX_BIN_DIR=$(p "$BIN_DIR")" \
        "PIPX_MAN_DIR=$(p "$PREFIX")/share/man"
}

# Run a command as the service user (printed; skipped in a dry run).
run_as_service() {
    local -a env_cmd
    mapfile -t env_cmd < <(service_env)
    run runuser -u "$SERVICE_USER" -- "${env_cmd[@]}" "$@"
}

# Run a read-only command as the service user, even in a dry run.
query_as_service() {
    local -a env_cmd
    mapfile -t env_cmd < <(service_env)
    runuser -u "$SERVICE_USER" -- "${env_cmd[@]}" "$@"
}

# Write stdin to PATH with MODE (root-owned) only if the content differs.
# Sets FILE_CHANGED to 1 when the file was (or, in a dry run, would be) written.
write_file() {
    local path=$1 mode=$2 target content state
    target=$(p "$path")
    content=$(cat)
    FILE_CHANGED=0
    if [[ -f $target ]] && cmp -s "$target" <(printf '%s\n' "$content"); then
        state=unchanged
    else
        FILE_CHANGED=1
        state=$([[ -e $target ]] && echo changed || echo new)
    fi
    if ((DRY_RUN)); then
        echo "--- $path (mode $mode, $state)"
        printf '%s\n' "$content"
        echo "--- end of $path"
        return 0
    fi
    if ((FILE_CHANGED)); then
        local tmp
        mkdir -p "$(dirname "$target")"
        tmp=$(mktemp "$target.XXXXXX")
        printf '%s\n' "$content" >"$tmp"
        chmod "$mode" "$tmp"
        mv -f "$tmp" "$target"
        echo "    wrote $path"
    else
        echo "    $path unchanged"
    fi
}

# Create a directory with an owner and mode if it is missing; leave it alone if not.
ensure_dir() {
    local path=$1 mode=$2 owner=$3
    [[ -d $(p "$path") ]] && return 0
    run mkdir -p "$(p "$path")"
    run chmod "$mode" "$(p "$path")"
    run chown "$owner" "$(p "$path")"
}

remove_path() {
    [[ -e $(p "$1") || -L $(p "$1") ]] || return 0
    run rm -rf "$(p "$1")"
}

package_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

service_user_exists() {
    getent passwd "$SERVICE_USER" >/dev/null
}

# ---------------------------------------------------------------- checks

check_python() {
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "microfedi needs Python 3.11 or newer (Debian 12 / Raspberry Pi OS bookworm or later); this system has $(python3 -V 2>&1)"
}

preflight() {
    if ((!DRY_RUN)) && [[ -z $ROOT && $EUID -ne 0 ]]; then
        die "run me as root: sudo $0 $*"
    fi
    local tool
    for tool in apt-get dpkg-query systemctl runuser useradd getent; do
        command -v "$tool" >/dev/null || die "'$tool' not found: this installer is for Debian / Raspberry Pi OS with systemd"
    done
    [[ -d $(p /run/systemd/system) ]] || ((DRY_RUN)) ||
        die "systemd is not running here (no /run/systemd/system); this installer needs a systemd machine"
    # Without python3 yet, python3-venv brings it, and the check runs after that.
    if command -v python3 >/dev/null; then
        check_python
    fi
    local wrapper
    wrapper=$(p "$WRAPPER")
    if [[ -e $wrapper ]] && ! grep -qF "$WRAPPER_MARK" "$wrapper"; then
        die "$WRAPPER exists and this installer did not write it (a pip install?); move it away and run me again"
    fi
}

# ---------------------------------------------------------------- install steps

install_packages() {
    local -a wanted=(python3-venv pipx) missing=()
    [[ $CADDY == yes ]] && wanted+=(caddy)
    local pkg
    for pkg in "${wanted[@]}"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        step "packages ${wanted[*]}: already installed"
        return 0
    fi
    step "installing ${missing[*]}"
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    ((DRY_RUN)) || check_python
}

create_service_user() {
    if service_user_exists; then
        step "system user $SERVICE_USER: exists"
    else
        step "creating system user $SERVICE_USER"
        run useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "microfedi server" "$SERVICE_USER"
    fi
    ensure_dir "$DATA_DIR" 0700 "$SERVICE_USER:$SERVICE_USER"
    ensure_dir "$PREFIX" 0755 "$SERVICE_USER:$SERVICE_USER"
}

# The service user may not be able to read the source where it lies (home dirs
# are 0700 on bookworm), so a local source is copied into the program dir first.
stage_source() {
    local stage
    stage=$(p "$SOURCE_STAGE")
    remove_path "$SOURCE_STAGE"
    run mkdir -p "$stage"
    if [[ -d $SOURCE ]]; then
        local -a excludes=()
        local pattern
        # Top-level leftovers of development (./microfedi-demo is quickstart.sh's data).
        for pattern in ./.git ./.venv ./venv ./.tox ./build ./dist ./microfedi-demo \
            .pytest_cache .mypy_cache .ruff_cache __pycache__ '*.egg-info'; do
            excludes+=("--exclude=$pattern")
        done
        echo "+ tar -C $(printf '%q' "$SOURCE") ${excludes[*]} -cf - . | tar -C $(printf '%q' "$stage") -xf -"
        ((DRY_RUN)) || tar -C "$SOURCE" "${excludes[@]}" -cf - . | tar -C "$stage" -xf -
        STAGED_SOURCE=$stage
    else
        run cp "$SOURCE" "$stage/"
        STAGED_SOURCE=$stage/$(basename "$SOURCE")
    fi
    run chown -R "$SERVICE_USER:$SERVICE_USER" "$stage"
}

install_microfedi() {
    local spec=$SOURCE
    if ((SOURCE_IS_PATH)); then
        step "installing microfedi from $SOURCE"
        stage_source
        spec=$STAGED_SOURCE
    else
        step "installing microfedi from PyPI spec '$SOURCE'"
    fi
    if [[ -x $(p "$MICROFEDI_BIN") ]]; then
        # --force reinstalls in place: an upgrade from PyPI, or the new code of a checkout.
        run_as_service pipx install --force "$spec"
    else
        run_as_service pipx install "$spec"
    fi
    step "preparing the data dir $DATA_DIR"
    run_as_service "$(p "$MICROFEDI_BIN")" init
}

declare -A DOMAIN_SERVICE=()

# Fill DOMAIN_SERVICE (domain -> service domain, empty when it serves itself)
# from `microfedi domain list`: "<domain>  served by <host>  N user(s)" or
# "<domain>  serves itself  N user(s)".
read_domains() {
    DOMAIN_SERVICE=()
    [[ -x $(p "$MICROFEDI_BIN") && -f $(p "$DATA_DIR")/microfedi.sqlite3 ]] || return 0
    if ((DRY_RUN)) && [[ -z $ROOT && $EUID -ne 0 ]]; then
        return 0
    fi
    local listing name verb by service
    listing=$(query_as_service "$(p "$MICROFEDI_BIN")" domain list)
    while read -r name verb by service _; do
        if [[ $verb == serves && $by == itself ]]; then
            DOMAIN_SERVICE[$name]=""
        elif [[ $verb == served && $by == by ]]; then
            DOMAIN_SERVICE[$name]=$service
        fi
    done <<<"$listing"
}

add_domains() {
    read_domains
    local spec name service
    for spec in "${DOMAIN_SPECS[@]}"; do
        name=${spec%%=*}
        service=${spec#*=}
        if [[ -v DOMAIN_SERVICE[$name] ]]; then
            local current=${DOMAIN_SERVICE[$name]}
            if [[ $current != "$service" ]]; then
                local now=${current:+served by $current}
                die "domain $name exists already (${now:-serving itself}); pass --domain $name${current:+=$current}, or leave it out: existing domains keep their sites"
            fi
            step "domain $name: exists"
            continue
        fi
        step "adding domain $name${service:+ (served by $service)}"
        if [[ -n $service ]]; then
            run_as_service "$(p "$MICROFEDI_BIN")" domain add "$name" --service-domain "$service"
        else
            run_as_service "$(p "$MICROFEDI_BIN")" domain add "$name"
        fi
        # microfedi stores the name as given: ASCII, lower-cased, checked above.
        DOMAIN_SERVICE[$name]=$service
    done
}

write_options() {
    step "remembering options in $OPTIONS_FILE"
    ensure_dir "$(dirname "$OPTIONS_FILE")" 0755 root:root
    write_file "$OPTIONS_FILE" 0644 <<EOF
# microfedi install.sh options, reused when install.sh runs again.
port=$PORT
caddy=$CADDY
caddy_handle_redirects=$HANDLE_REDIRECTS
EOF
}

systemd_unit() {
    cat <<EOF
# Written by microfedi's install.sh; run it again to change this file.
[Unit]
Description=microfedi ActivityPub server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=$SERVICE_USER
Group=$SERVICE_USER
Environment=MICROFEDI_DATA_DIR=$DATA_DIR
WorkingDirectory=$DATA_DIR
ExecStart=$MICROFEDI_BIN run --host 127.0.0.1 --port $PORT
Restart=on-failure
RestartSec=5
UMask=0077
# The server needs its data dir and the network, nothing else.
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=$DATA_DIR
ProtectHome=true
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictSUIDSGID=true
RestrictNamespaces=true
LockPersonality=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# A soft limit: above it the kernel reclaims the service's memory first. A hard
# MemoryMax would kill the server during a burst (a big inbox flood) instead.
MemoryHigh=400M

[Install]
WantedBy=multi-user.target
EOF
}

admin_wrapper() {
    cat <<EOF
#!/bin/sh
$WRAPPER_MARK: the microfedi command as the service
# user on the service's data dir, so files it creates stay the service's own.
if [ "\$(id -u)" -ne 0 ]; then
    echo "microfedi: run me as root, e.g. sudo microfedi \$*" >&2
    exit 1
fi
cd /
exec runuser -u $SERVICE_USER -- env MICROFEDI_DATA_DIR=$DATA_DIR $MICROFEDI_BIN "\$@"
EOF
}

install_service() {
    step "writing the systemd unit and the microfedi command"
    write_file "$UNIT_FILE" 0644 < <(systemd_unit)
    local unit_changed=$FILE_CHANGED
    write_file "$WRAPPER" 0755 < <(admin_wrapper)
    ((unit_changed)) && run systemctl daemon-reload
    if ! systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
        run systemctl enable "$UNIT_NAME"
    fi
    step "(re)starting $UNIT_NAME"
    run systemctl restart "$UNIT_NAME"
}

# Wait until the service accepts connections on its port (a Pi may need a while).
wait_for_service() {
    ((DRY_RUN)) && return 0
    local attempt
    for attempt in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            return 0
        fi
        ((attempt % 25 == 0)) && echo "    waiting for microfedi on 127.0.0.1:$PORT ..."
        sleep 0.2
    done
    die "microfedi did not start listening on 127.0.0.1:$PORT within 30 s; see: journalctl -u $UNIT_NAME -n 50"
}

# ---------------------------------------------------------------- Caddy

declare -A SITE_HOSTS=() HANDLE_REDIRECT_TO=()

# URL hosts get a reverse proxy; split handle domains only redirect discovery.
compute_sites() {
    local name service
    for name in "${!DOMAIN_SERVICE[@]}"; do
        service=${DOMAIN_SERVICE[$name]}
        if [[ -z $service ]]; then
            SITE_HOSTS[$name]=1
        else
            SITE_HOSTS[$service]=1
            HANDLE_REDIRECT_TO[$name]=$service
        fi
    done
}

sorted_keys() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort
}

caddy_snippet() {
    local host name service path
    echo "# microfedi's sites, written by install.sh: run it again to change them."
    echo "# Caddy gets and renews a TLS certificate for every site here."
    while read -r host; do
        [[ -n $host ]] || continue
        printf '\n%s {\n\treverse_proxy 127.0.0.1:%s\n}\n' "$host" "$PORT"
    done < <(sorted_keys "${!SITE_HOSTS[@]}")
    [[ $HANDLE_REDIRECTS == yes ]] || return 0
    while read -r name; do
        [[ -n $name ]] || continue
        service=${HANDLE_REDIRECT_TO[$name]}
        printf '\n%s {\n\t# Handles @user@%s have their actors on %s.\n' "$name" "$name" "$service"
        for path in "${DISCOVERY_PATHS[@]}"; do
            printf '\tredir /.well-known/%s https://%s{uri} 301\n' "$path" "$service"
        done
        printf '\trespond 404\n}\n'
    done < <(sorted_keys "${!HANDLE_REDIRECT_TO[@]}")
}

# Keep copies of the Caddy files, to put back if Caddy refuses the new ones.
backup_caddy_files() {
    ((DRY_RUN)) && return 0
    CADDY_BACKUP=$(mktemp -d)
    local file
    for file in "$CADDYFILE" "$CADDY_SNIPPET"; do
        [[ -f $(p "$file") ]] && cp -p "$(p "$file")" "$CADDY_BACKUP/$(basename "$file")"
    done
    return 0
}

restore_caddy_files() {
    local file saved
    for file in "$CADDYFILE" "$CADDY_SNIPPET"; do
        saved=$CADDY_BACKUP/$(basename "$file")
        if [[ -f $saved ]]; then
            mkdir -p "$(dirname "$(p "$file")")"
            cp -p "$saved" "$(p "$file")"
        else
            rm -f "$(p "$file")"
        fi
    done
}

# Check the changed configuration with Caddy itself, then reload; on refusal
# put the previous files back so the running sites stay as they were.
validate_and_reload_caddy() {
    echo "+ caddy validate --config $(p "$CADDYFILE") --adapter caddyfile"
    if ((!DRY_RUN)) && ! caddy validate --config "$(p "$CADDYFILE")" --adapter caddyfile >"$CADDY_BACKUP/validate.log" 2>&1; then
        cat "$CADDY_BACKUP/validate.log" >&2
        restore_caddy_files
        rm -rf "$CADDY_BACKUP"
        die "Caddy refused the new configuration (its words are above); the previous Caddy files are back and Caddy was not reloaded"
    fi
    [[ -n ${CADDY_BACKUP:-} ]] && rm -rf "$CADDY_BACKUP"
    run systemctl reload-or-restart caddy
}

configure_caddy() {
    step "writing Caddy sites to $CADDY_SNIPPET"
    compute_sites
    backup_caddy_files
    ensure_dir "$CADDY_DIR" 0755 root:root
    local caddy_changed=0 caddyfile
    caddyfile=$(p "$CADDYFILE")
    if ! grep -qsxF "$CADDY_IMPORT" "$caddyfile"; then
        local mode=0644 existing=""
        if [[ -f $caddyfile ]]; then
            mode=$(stat -c %a "$caddyfile")
            existing=$(cat "$caddyfile")$'\n\n'
        fi
        write_file "$CADDYFILE" "$mode" <<EOF
${existing}# microfedi's sites (added by microfedi's install.sh)
$CADDY_IMPORT
EOF
        caddy_changed=1
    fi
    write_file "$CADDY_SNIPPET" 0644 < <(caddy_snippet)
    ((FILE_CHANGED)) && caddy_changed=1
    if ((caddy_changed)); then
        validate_and_reload_caddy
    else
        [[ -n ${CADDY_BACKUP:-} ]] && rm -rf "$CADDY_BACKUP"
        step "Caddy configuration unchanged; not reloading"
    fi
}

# Take microfedi's sites out of Caddy (for --no-caddy and --uninstall).
remove_caddy_sites() {
    local caddyfile
    caddyfile=$(p "$CADDYFILE")
    [[ -e $(p "$CADDY_SNIPPET") ]] || grep -qsxF "$CADDY_IMPORT" "$caddyfile" || return 0
    step "removing microfedi's Caddy sites"
    backup_caddy_files
    remove_path "$CADDY_DIR"
    if grep -qsxF "$CADDY_IMPORT" "$caddyfile"; then
        write_file "$CADDYFILE" "$(stat -c %a "$caddyfile")" < <(
            grep -vxF -e "$CADDY_IMPORT" -e "# microfedi's sites (added by microfedi's install.sh)" "$caddyfile"
        )
    fi
    if command -v caddy >/dev/null; then
        validate_and_reload_caddy
    else
        [[ -n ${CADDY_BACKUP:-} ]] && rm -rf "$CADDY_BACKUP"
        return 0
    fi
}

# ---------------------------------------------------------------- report

print_redirects_for() {
    local name=$1 service=$2 path
    for path in "${DISCOVERY_PATHS[@]}"; do
        echo "      https://$name/.well-known/$path -> https://$service/.well-known/$path"
    done
}

print_summary() {
    local status host name
    echo
    if ((DRY_RUN)); then
        echo "dry run: nothing was changed. A real run would end with:"
        echo "  service:  $UNIT_NAME listening on 127.0.0.1:$PORT"
    else
        status=$(systemctl is-active "$UNIT_NAME" 2>/dev/null || true)
        echo "microfedi is installed."
        echo "  service:  $UNIT_NAME ${status:-unknown}, listening on 127.0.0.1:$PORT"
    fi
    echo "  data dir: $DATA_DIR (back it up; uninstalling keeps it)"
    if ((${#SITE_HOSTS[@]} == 0)); then
        echo "  URLs:     none yet, as there are no domains"
    else
        echo "  URLs:"
        while read -r host; do
            echo "    https://$host/"
        done < <(sorted_keys "${!SITE_HOSTS[@]}")
    fi
    if [[ $CADDY == no ]]; then
        echo "  no Caddy: proxy https for those hosts to 127.0.0.1:$PORT, passing the Host header"
    fi
    if ((${#HANDLE_REDIRECT_TO[@]})); then
        if [[ $HANDLE_REDIRECTS == yes && $CADDY == yes ]]; then
            echo "  split domains: Caddy redirects their discovery paths (point their DNS here too):"
        else
            echo "  split domains: on each one's own web host, redirect (301, keep the query string):"
        fi
        while read -r name; do
            print_redirects_for "$name" "${HANDLE_REDIRECT_TO[$name]}"
        done < <(sorted_keys "${!HANDLE_REDIRECT_TO[@]}")
    fi
    echo "next steps:"
    if ((${#SITE_HOSTS[@]} == 0)); then
        echo "  1. add your domain: sudo ./install.sh --domain your.domain"
    else
        echo "  1. point the DNS (A/AAAA) of the hosts above at this machine; open ports 80 and 443"
    fi
    echo "  2. sudo microfedi user add you@your.domain"
    echo "  3. more domains later: sudo ./install.sh --domain new.example (safe to run again)"
}

# ---------------------------------------------------------------- main flows

do_install() {
    install_packages
    create_service_user
    install_microfedi
    add_domains
    write_options
    install_service
    wait_for_service
    if [[ $CADDY == yes ]]; then
        configure_caddy
    else
        compute_sites
        remove_caddy_sites
    fi
    print_summary
}

do_uninstall() {
    step "stopping and removing $UNIT_NAME"
    if [[ -e $(p "$UNIT_FILE") ]]; then
        run systemctl disable --now "$UNIT_NAME"
        remove_path "$UNIT_FILE"
        run systemctl daemon-reload
    fi
    remove_caddy_sites
    step "removing the program and the microfedi command"
    remove_path "$WRAPPER"
    remove_path "$PREFIX"
    remove_path "$(dirname "$OPTIONS_FILE")"
    echo
    echo "microfedi is uninstalled. Kept: the data dir $DATA_DIR (database, keys, media)"
    echo "and the system user $SERVICE_USER. To delete them too:"
    echo "  sudo rm -rf $DATA_DIR && sudo userdel $SERVICE_USER"
}

main() {
    parse_args "$@"
    load_saved_options
    apply_defaults
    preflight "$@"
    # Nothing below depends on where it was started; the service user may not
    # even be allowed into that directory.
    cd /
    ((DRY_RUN)) && echo "dry run: printing what would be run and written; nothing changes."
    if ((UNINSTALL)); then
        do_uninstall
    else
        do_install
    fi
}

main "$@"
