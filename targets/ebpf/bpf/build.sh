#!/bin/sh
# Builds the eBPF objects next to their sources (or into $1), reproducibly: the same clang
# gives byte-identical sections wherever the tree lives, because the object carries no
# path (debug-info directory mapped to ".") and no DWARF (stripped; BTF stays).
# Needs Debian's clang, llvm (llvm-strip), libbpf-dev and linux-libc-dev.
set -eu
cd "$(dirname "$0")"
out="${1:-.}"
arch_inc="/usr/include/$(uname -m)-linux-gnu"
for src in pipec.bpf.c bench.bpf.c; do
  obj="$out/${src%.c}.o"
  clang -O2 -g -target bpf -mcpu=v3 -Wall -Werror \
    -I"$arch_inc" -fdebug-compilation-dir=. -fdebug-prefix-map="$PWD"=. \
    -c "$src" -o "$obj"
  llvm-strip -g "$obj"
done
