#!/usr/bin/env bash
# Installs what tinyrobust needs on Debian/Ubuntu: the Arm toolchain, newlib, QEMU and clang (libFuzzer) from
# apt (when missing), and the Python package with its dependencies into .venv.
set -euo pipefail
cd "$(dirname "$0")"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=()
command -v arm-none-eabi-gcc >/dev/null || packages+=(gcc-arm-none-eabi)
[ -e /usr/lib/arm-none-eabi/newlib/libc.a ] || packages+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || packages+=(qemu-system-arm)
command -v gcc >/dev/null || packages+=(gcc)
# clang with libFuzzer, for the tests that fuzz the firmware's frame parser
fuzzer="$(clang -print-resource-dir 2>/dev/null || true)/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
[ -e "$fuzzer" ] || packages+=(clang libclang-rt-dev)
python3 -c "import venv, ensurepip" 2>/dev/null || packages+=(python3-venv)
if [ ${#packages[@]} -gt 0 ]; then
    echo "installing with apt: ${packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/tinyrobust doctor
