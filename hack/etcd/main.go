// Command etcd is upstream's etcd server main; etcd's own go.mod uses relative
// replaces, so `go install go.etcd.io/etcd/server/v3@v3.5.21` does not work.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
