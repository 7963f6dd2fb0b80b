package plugin

// Delivery is how pushed messages reach a client: the policy's (and a
// user's) "delivery".
type Delivery string

const (
	// DeliveryMSRP pushes over an MSRP session only (the seed's Figure
	// 2): a client that refuses it keeps its messages until it accepts.
	DeliveryMSRP Delivery = "msrp"
	// DeliveryPager sends each message as a SIP MESSAGE (pager mode, RFC
	// 3428) to the registered contact, never an INVITE.
	DeliveryPager Delivery = "pager"
	// DeliveryAuto offers MSRP first and falls back to pager mode for a
	// client that refuses it (415, 488, 606, or an answer without a
	// usable MSRP m-line); the refusal is remembered for the life of the
	// registration (Registration.PagerOnly). Under auto, PagerBelow sends
	// small mailboxes by pager mode even to MSRP clients.
	DeliveryAuto Delivery = "auto"
)

// Valid reports whether d is one of the declared modes.
func (d Delivery) Valid() bool { return d == DeliveryMSRP || d == DeliveryPager || d == DeliveryAuto }

// MaxPagerBelow bounds pager_below: a mailbox that large is better
// served by one MSRP session than by as many MESSAGE transactions.
const MaxPagerBelow = 1000

// validateDelivery checks a delivery mode and pager_below, of the policy
// or (user: the empty mode allowed) of a user's settings.
func validateDelivery(d Delivery, pagerBelow int, user bool) error {
	switch {
	case !(user && d == "") && !d.Valid():
		return &FieldError{Field: "delivery", Problem: `must be "msrp", "pager" or "auto"`}
	case pagerBelow < 0 || pagerBelow > MaxPagerBelow:
		return &FieldError{Field: "pager_below", Problem: "must be from 0 to 1000"}
	}
	return nil
}

// DeliveryFor returns the delivery mode and pager_below in force for a
// user with settings u: the user's when set, else the policy's.
func (p Policy) DeliveryFor(u UserSettings) (Delivery, int) {
	d, below := p.Delivery, p.PagerBelow
	if u.Delivery != "" {
		d = u.Delivery
	}
	if u.PagerBelow > 0 {
		below = u.PagerBelow
	}
	return d, below
}

// Pager decides whether a push goes by SIP MESSAGE (pager mode): always
// under DeliveryPager; under DeliveryAuto when the client refused MSRP
// during its registration (pagerOnly) or when the mailbox holds at most
// pagerBelow messages (stored, in flight or pending); never under
// DeliveryMSRP.
func Pager(d Delivery, pagerBelow, stored int, pagerOnly bool) bool {
	switch d {
	case DeliveryPager:
		return true
	case DeliveryAuto:
		return pagerOnly || stored > 0 && stored <= pagerBelow
	}
	return false
}
