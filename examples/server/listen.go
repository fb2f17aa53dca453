package main

import (
	"net"

	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/systemd"
	"github.com/drainkit/drainkit/upgrade"
)

// listen returns the server's Upgrader and its listener, which comes, in
// order of preference, from the process that this one replaces in an
// upgrade, from systemd (socket activation, and -addr is not used), or from
// listening on -addr. The source says which. The caller stops the Upgrader
// when it returns.
func listen(cfg demoflags.Config) (*upgrade.Upgrader, net.Listener, systemd.Source, error) {
	opts := []upgrade.Option{upgrade.WithReadyTimeout(cfg.UpgradeTimeout)}
	if cfg.PIDFile != "" {
		opts = append(opts, upgrade.WithPIDFile(cfg.PIDFile))
	}
	u, err := upgrade.New(opts...)
	if err != nil {
		return nil, nil, "", err
	}
	lis, src, err := u.Listen("tcp", cfg.Addr)
	if err != nil {
		u.Stop()
		return nil, nil, "", err
	}
	return u, lis, src, nil
}
