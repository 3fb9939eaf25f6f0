// Command etcd is etcd's server, at the version Kubernetes pins, built from
// the same module graph as the Kubernetes commands.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
