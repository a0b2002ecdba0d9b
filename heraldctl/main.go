// Command heraldctl is Herald's command-line tool. Its one command,
// migrate, translates MetalLB's configuration into Herald's objects.
//
// Built as kubectl-herald it is also a kubectl plugin:
//
//	go build -o kubectl-herald ./heraldctl
//	kubectl herald migrate -f metallb.yaml > herald.yaml
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldlb/herald/heraldctl/migrate"
	"github.com/heraldlb/herald/internal/version"
)

// Exit codes.
const (
	exitError      = 1 // the input could not be read
	exitUsage      = 2
	exitIncomplete = 3 // --check: something is LOST or left to do by hand
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// progName is how the user called us: "kubectl herald" for the plugin.
func progName(argv0 string) string {
	if strings.HasPrefix(filepath.Base(argv0), "kubectl-herald") {
		return "kubectl herald"
	}
	return "heraldctl"
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	prog := progName(args[0])
	usage := func() {
		fmt.Fprintf(stderr, "usage: %s migrate [-f FILE]... [--kubeconfig FILE] [--namespace NS] [--herald-namespace NS] [--check]\n", prog)
		fmt.Fprintf(stderr, "       %s migrate --fields\n       %s version\n", prog, prog)
	}
	if len(args) < 2 {
		usage()
		return exitUsage
	}
	switch args[1] {
	case "migrate":
		return migrateCmd(prog, args[2:], stdin, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version.String("heraldctl"))
		return 0
	case "-h", "--help", "help":
		usage()
		return 0
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n", prog, args[1])
	usage()
	return exitUsage
}

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

func migrateCmd(prog string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files fileList
	fs.Var(&files, "f", "MetalLB configuration to translate: custom resources and/or the legacy ConfigMap, multi-document YAML; repeatable; - for stdin. Without -f, read from the cluster")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster to read MetalLB's configuration from (default: $KUBECONFIG or ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context to use")
	namespace := fs.String("namespace", "metallb-system", "MetalLB's namespace, where it reads its configuration")
	heraldNS := fs.String("herald-namespace", "herald-system", "Herald's namespace, where BGP password Secrets must be")
	check := fs.Bool("check", false, "exit 3 when anything cannot be translated or needs doing by hand")
	fields := fs.Bool("fields", false, "print the table of every MetalLB field and its Herald field, and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s migrate [flags]\n\nTranslates MetalLB's configuration into Herald's objects (YAML on stdout); what cannot be translated, why, and what to do instead goes to stderr.\n\n", prog)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s migrate: unexpected argument %q (files go after -f)\n", prog, fs.Arg(0))
		return exitUsage
	}
	if *fields {
		if err := migrate.WriteFieldTable(stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return exitError
		}
		return 0
	}

	var in *migrate.Input
	if len(files) > 0 {
		in = &migrate.Input{}
		for _, f := range files {
			var b []byte
			var err error
			if f == "-" {
				b, err = io.ReadAll(stdin)
			} else {
				b, err = os.ReadFile(f)
			}
			if err == nil {
				err = in.AddYAML(f, b)
			}
			if err != nil {
				fmt.Fprintf(stderr, "%s migrate: %v\n", prog, err)
				return exitError
			}
		}
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = *kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kubeContext}).ClientConfig()
		if err != nil {
			fmt.Fprintf(stderr, "%s migrate: no -f given and no cluster to read: %v\n", prog, err)
			return exitError
		}
		c, err := dynamic.NewForConfig(cfg)
		if err == nil {
			in, err = migrate.ReadCluster(context.Background(), c, *namespace)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s migrate: %v\n", prog, err)
			return exitError
		}
	}

	res := migrate.Translate(in, migrate.Options{HeraldNamespace: *heraldNS})
	if err := res.WriteYAML(stdout); err != nil {
		fmt.Fprintf(stderr, "%s migrate: %v\n", prog, err)
		return exitError
	}
	_ = res.WriteReport(stderr)
	if *check && !res.Complete() {
		return exitIncomplete
	}
	return 0
}
