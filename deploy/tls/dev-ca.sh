#!/usr/bin/env bash
# Makes a development CA and the two certificates of the host<->DPU channel, for trying
# pipec-cni against pipecd over TCP with mutual TLS (never for production: the CA key is
# left on disk beside the certificates).
#
#   deploy/tls/dev-ca.sh DIR [SERVER_NAME [SERVER_IP]]
#
# DIR gets ca.pem/ca.key, pipecd.pem/pipecd.key (the server: DNS SERVER_NAME, default
# "pipecd", and IP SERVER_IP, default 127.0.0.1) and pipec-cni.pem/pipec-cni.key (the
# client). Keys are written with mode 0600.
set -euo pipefail
dir=${1:?usage: dev-ca.sh DIR [SERVER_NAME [SERVER_IP]]}
name=${2:-pipecd}
ip=${3:-127.0.0.1}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=pipec development CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() { # NAME SUBJECT EXTENSIONS
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue pipecd "$name" "subjectAltName=DNS:$name,IP:$ip
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
issue pipec-cni "pipec-cni" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ca.srl
chmod 0644 ca.pem pipecd.pem pipec-cni.pem
echo "wrote $dir: ca.pem pipecd.pem pipecd.key pipec-cni.pem pipec-cni.key"
