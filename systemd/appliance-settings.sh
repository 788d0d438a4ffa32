# shellcheck shell=bash
# Reading the box's settings file on the boot partition (sourced by appliance-firstboot
# and appliance-network). The file is edited on any computer: CRLF line ends and spaces
# around "=" are fine.

APPLIANCE_BOOT=${APPLIANCE_BOOT:-/boot/firmware}
APPLIANCE_SETTINGS=$APPLIANCE_BOOT/appliance.txt

# setting KEY [DEFAULT]: the last value of KEY in the settings file, or DEFAULT.
setting() {
  local value=""
  if [ -r "$APPLIANCE_SETTINGS" ]; then
    value=$(tr -d '\r' < "$APPLIANCE_SETTINGS" \
      | sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" | tail -n 1 | sed 's/[[:space:]]*$//')
  fi
  printf '%s' "${value:-${2:-}}"
}

# set_setting KEY VALUE: write KEY=VALUE into the settings file (replacing its line, or appended).
set_setting() {
  local tmp="$APPLIANCE_SETTINGS.tmp"
  if grep -q "^[[:space:]]*$1[[:space:]]*=" "$APPLIANCE_SETTINGS" 2>/dev/null; then
    sed "s|^[[:space:]]*$1[[:space:]]*=.*|$1=$2|" "$APPLIANCE_SETTINGS" > "$tmp"
  else
    { cat "$APPLIANCE_SETTINGS" 2>/dev/null; printf '%s=%s\n' "$1" "$2"; } > "$tmp"
  fi
  sync "$tmp"
  mv "$tmp" "$APPLIANCE_SETTINGS"
  sync "$APPLIANCE_BOOT"
}
