package plugin

import (
	"errors"
	"sort"
	"testing"
	"time"
)

func TestNewIDSorts(t *testing.T) {
	now := time.Now()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = NewID(now.Add(time.Duration(i) * time.Millisecond))
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids made in order do not sort in order")
	}
	// Same millisecond: still unique.
	seen := map[string]bool{}
	for range 1000 {
		id := NewID(now)
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
}

func TestMessageValidate(t *testing.T) {
	ok := func() *Message {
		return &Message{Recipient: MustParseAOR("sip:bob@example.com"), Kind: KindSIPMessage, Raw: []byte("MESSAGE"), Received: time.Now()}
	}
	tests := []struct {
		field string
		edit  func(*Message)
	}{
		{"", func(*Message) {}},
		{"", func(m *Message) { m.ID = NewID(time.Now()) }},
		{"recipient", func(m *Message) { m.Recipient = AOR{} }},
		{"kind", func(m *Message) { m.Kind = "fax" }},
		{"raw", func(m *Message) { m.Raw = nil }},
		{"received", func(m *Message) { m.Received = time.Time{} }},
		{"id", func(m *Message) { m.ID = "not-a-ulid" }},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			m := ok()
			tt.edit(m)
			err := m.Validate()
			var fe *FieldError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
				t.Fatalf("Validate() = %v, want FieldError for %s", err, tt.field)
			}
		})
	}
}

func TestLimitError(t *testing.T) {
	err := error(&LimitError{Err: ErrMailboxFull, Limit: "max_mailbox", Max: 10, Got: 10})
	if !errors.Is(err, ErrMailboxFull) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("errors.Is wrong for %v", err)
	}
	if got, want := err.Error(), "plugin: mailbox full: max_mailbox is 10, 10 stored"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	big := error(&LimitError{Err: ErrTooLarge, Limit: "max_message_size", Max: 100, Got: 120})
	if got, want := big.Error(), "plugin: message too large: max_message_size is 100, the message has 120 octets"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
