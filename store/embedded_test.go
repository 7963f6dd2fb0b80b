package store_test

import (
	"testing"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
	"github.com/deferpush/deferpush/store/storetest"
)

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) plugin.Store {
		s, err := store.NewEmbedded(store.Config{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestEmbeddedRejectsClient(t *testing.T) {
	if _, err := store.NewEmbedded(store.Config{URL: "redis://127.0.0.1:1"}); err == nil {
		t.Fatal("NewEmbedded with URL succeeded")
	}
	if _, err := store.New(store.Config{}); err == nil {
		t.Fatal("New without Client or URL succeeded")
	}
}
