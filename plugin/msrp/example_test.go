package msrp_test

import (
	"context"
	"fmt"
	"log"

	"github.com/deferpush/deferpush/plugin/msrp"
)

// A passive session on a listener receives what an active session sends.
func Example() {
	ctx := context.Background()
	lis, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	go lis.Run(ctx)
	defer lis.Close()

	got := make(chan *msrp.Message, 1)
	client, err := msrp.NewSession(msrp.Config{
		Local: lis.URI(), // the client's a=path
		Handler: msrp.HandlerFunc(func(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
			got <- m
			return nil // answer 200
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	server, err := msrp.NewSession(msrp.Config{Local: msrp.URI{Host: "127.0.0.1", Port: 2855}})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	if err := lis.Add(client, []msrp.URI{server.URI()}); err != nil {
		log.Fatal(err)
	}

	// The server connects to the client's path and pushes a message.
	if err := server.Connect(ctx, []msrp.URI{client.URI()}); err != nil {
		log.Fatal(err)
	}
	err = server.Send(ctx, msrp.Message{
		ContentType:   "text/plain",
		Body:          []byte("Watson, come here."),
		SuccessReport: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	m := <-got
	fmt.Printf("%s: %s\n", m.ContentType, m.Body)
	// Output: text/plain: Watson, come here.
}

// Start pipelines messages: each goes on the wire in call order, and its
// wait reports its acknowledgement later.
func ExampleSession_Start() {
	ctx := context.Background()
	lis, err := msrp.NewListener(msrp.ListenerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		log.Fatal(err)
	}
	go lis.Run(ctx)
	defer lis.Close()

	got := make(chan *msrp.Message, 3)
	client, err := msrp.NewSession(msrp.Config{
		Local: lis.URI(),
		Handler: msrp.HandlerFunc(func(ctx context.Context, s *msrp.Session, m *msrp.Message) error {
			got <- m
			return nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	server, err := msrp.NewSession(msrp.Config{Local: msrp.URI{Host: "127.0.0.1", Port: 2855}})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	if err := lis.Add(client, []msrp.URI{server.URI()}); err != nil {
		log.Fatal(err)
	}
	if err := server.Connect(ctx, []msrp.URI{client.URI()}); err != nil {
		log.Fatal(err)
	}

	var waits []func() error
	for _, text := range []string{"one", "two", "three"} {
		wait, err := server.Start(ctx, msrp.Message{ContentType: "text/plain", Body: []byte(text)})
		if err != nil {
			log.Fatal(err) // nothing of this message was sent
		}
		waits = append(waits, wait)
	}
	for _, wait := range waits {
		if err := wait(); err != nil {
			log.Fatal(err)
		}
	}
	for range waits {
		fmt.Printf("%s\n", (<-got).Body)
	}
	// Output:
	// one
	// two
	// three
}
