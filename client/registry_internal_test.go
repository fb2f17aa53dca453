package client

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRegistryDropsClosedConns checks that NewClient keeps the registry
// from piling up closed conns when nothing calls Open: each NewClient looks
// at a few conns and drops those closed.
func TestRegistryDropsClosedConns(t *testing.T) {
	registry.mu.Lock()
	before := len(registry.entries)
	registry.mu.Unlock()
	for range 1000 {
		cc, err := NewClient("passthrough:///closed", grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("NewClient() = %v", err)
		}
		cc.Close()
	}
	registry.mu.Lock()
	after := len(registry.entries)
	registry.mu.Unlock()
	if after > before+sweepPerNewClient {
		t.Errorf("registry holds %d conns after 1,000 made and closed, %d before: want at most %d more", after, before, sweepPerNewClient)
	}
}
