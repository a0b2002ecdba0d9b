//go:build tools

// Package etcd pins the etcd server the lab runs.
package etcd

import _ "go.etcd.io/etcd/server/v3"
