package plugin_test

import (
	"errors"
	"fmt"

	"github.com/deferpush/deferpush/plugin"
)

func ExampleParseAOR() {
	for _, s := range []string{
		`"Bob" <sip:bob@Example.COM;transport=tcp>;tag=49583`,
		"SIPS:Alice@[2001:DB8::1]:5061",
		"tel:+1-201-555-0123;ext=7",
		"sip:example.com",
	} {
		aor, err := plugin.ParseAOR(s)
		fmt.Println(aor, errors.Is(err, plugin.ErrBadAOR))
	}
	// Output:
	// sip:bob@example.com false
	// sips:alice@[2001:db8::1]:5061 false
	// tel:+12015550123;ext=7 false
	//  true
}

func ExamplePolicy_Push() {
	p := plugin.DefaultPolicy()
	fmt.Println(p.Push(plugin.UserSettings{}), p.Push(plugin.UserSettings{Push: plugin.PushHold}))
	p.PushEnabled = false
	fmt.Println(p.Push(plugin.UserSettings{Push: plugin.PushOn}))
	// Output:
	// on hold
	// off
}
