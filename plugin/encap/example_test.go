package encap_test

import (
	"fmt"
	"time"

	"github.com/deferpush/deferpush/plugin/encap"
)

// A MESSAGE for an offline user is dated and stored; when the user
// registers, it is pushed as message/sip, which the client accepts.
func Example() {
	received := []byte("MESSAGE sip:user2@imserver.com SIP/2.0\r\n" +
		"From: <sip:user1@imserver.com>;tag=49583\r\n" +
		"To: <sip:user2@imserver.com>\r\n" +
		"Call-ID: asd88asd77a@1.2.3.4\r\n" +
		"CSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain\r\n" +
		"Content-Length: 18\r\n" +
		"\r\n" +
		"Watson, come here.")
	stored, err := encap.AddDate(received, time.Date(2002, 2, 21, 13, 2, 3, 0, time.UTC))
	if err != nil {
		fmt.Println(err)
		return
	}

	p, err := encap.Build(encap.Deferred{Kind: encap.KindSIP, Stored: stored},
		encap.Options{AcceptTypes: []string{"message/cpim", "message/sip", "text/plain"}})
	if err != nil {
		fmt.Println(err) // ErrHold: keep it for the next registration
		return
	}

	d, err := encap.Decode(p.ContentType, p.Body)
	fmt.Println(p.ContentType, d.CallID, d.Date.Format(time.RFC3339), string(d.Body), err)
	// Output: message/sip asd88asd77a@1.2.3.4 2002-02-21T13:02:03Z Watson, come here. <nil>
}
