package store_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/store"
)

func Example() {
	ctx := context.Background()
	s, err := store.NewEmbedded(store.Config{})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	aor, _ := plugin.ParseAOR("<sip:bob@Example.com>;tag=1")
	now := time.Now()
	for _, body := range []string{"first", "second"} {
		m := &plugin.Message{Recipient: aor, Kind: plugin.KindSIPMessage, Raw: []byte(body), Received: now}
		if err := s.Append(ctx, m, plugin.DefaultPolicy().Limits()); err != nil {
			panic(err)
		}
	}
	msgs, _ := s.Claim(ctx, aor, "push-1", 10, 30*time.Second)
	var confirmed []string
	for _, m := range msgs {
		fmt.Println(m.Recipient, string(m.Raw))
		confirmed = append(confirmed, m.ID) // the client took it
	}
	n, _ := s.Ack(ctx, aor, "push-1", confirmed...)
	fmt.Println("acked", n)
	_ = s.Unlock(ctx, aor, "push-1")
	c, _ := s.Count(ctx, aor)
	fmt.Printf("%+v\n", c)
	// Output:
	// sip:bob@example.com first
	// sip:bob@example.com second
	// acked 2
	// {Pending:0 InFlight:0 Dead:0}
}
