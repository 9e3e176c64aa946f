// Command kube-scheduler is upstream's kube-scheduler main, built from Go
// modules for the e2e control plane.
package main

import (
	"os"
	_ "time/tzdata"

	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.RunContext(genericapiserver.SetupSignalContext(), app.NewSchedulerCommand()))
}
