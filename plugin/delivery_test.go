package plugin

import (
	"errors"
	"testing"
)

func TestDeliveryValidate(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edit  func(*Policy)
		user  UserSettings
		field string // "" valid
	}{
		{name: "defaults", edit: func(*Policy) {}},
		{name: "pager", edit: func(p *Policy) { p.Delivery = DeliveryPager }},
		{name: "msrp", edit: func(p *Policy) { p.Delivery = DeliveryMSRP; p.PagerBelow = MaxPagerBelow }},
		{name: "empty mode", edit: func(p *Policy) { p.Delivery = "" }, field: "delivery"},
		{name: "unknown mode", edit: func(p *Policy) { p.Delivery = "sms" }, field: "delivery"},
		{name: "negative pager_below", edit: func(p *Policy) { p.PagerBelow = -1 }, field: "pager_below"},
		{name: "pager_below too large", edit: func(p *Policy) { p.PagerBelow = MaxPagerBelow + 1 }, field: "pager_below"},
		{name: "user empty mode", edit: func(*Policy) {}, user: UserSettings{Delivery: ""}},
		{name: "user pager", edit: func(*Policy) {}, user: UserSettings{Delivery: DeliveryPager, PagerBelow: 3}},
		{name: "user unknown mode", edit: func(*Policy) {}, user: UserSettings{Delivery: "MSRP"}, field: "delivery"},
		{name: "user negative pager_below", edit: func(*Policy) {}, user: UserSettings{PagerBelow: -2}, field: "pager_below"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			tt.edit(&p)
			err := errors.Join(p.Validate(), tt.user.Validate())
			var fe *FieldError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("Validate() = %v; want nil", err)
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid)):
				t.Fatalf("Validate() = %v; want a FieldError for %s", err, tt.field)
			}
		})
	}
}

func TestDeliveryFor(t *testing.T) {
	p := DefaultPolicy()
	p.Delivery, p.PagerBelow = DeliveryAuto, 2
	for _, tt := range []struct {
		u         UserSettings
		wantD     Delivery
		wantBelow int
	}{
		{UserSettings{}, DeliveryAuto, 2},
		{UserSettings{Delivery: DeliveryMSRP}, DeliveryMSRP, 2},
		{UserSettings{PagerBelow: 5}, DeliveryAuto, 5},
		{UserSettings{Delivery: DeliveryPager, PagerBelow: 1}, DeliveryPager, 1},
	} {
		if d, below := p.DeliveryFor(tt.u); d != tt.wantD || below != tt.wantBelow {
			t.Errorf("DeliveryFor(%+v) = %s, %d; want %s, %d", tt.u, d, below, tt.wantD, tt.wantBelow)
		}
	}
}

func TestPager(t *testing.T) {
	for _, tt := range []struct {
		d         Delivery
		below     int
		stored    int
		pagerOnly bool
		want      bool
	}{
		{DeliveryPager, 0, 10, false, true},
		{DeliveryMSRP, 100, 1, true, false},
		{DeliveryAuto, 0, 1, false, false},
		{DeliveryAuto, 0, 1, true, true},
		{DeliveryAuto, 1, 1, false, true},
		{DeliveryAuto, 1, 2, false, false},
		{DeliveryAuto, 3, 0, false, false},
	} {
		if got := Pager(tt.d, tt.below, tt.stored, tt.pagerOnly); got != tt.want {
			t.Errorf("Pager(%s, below %d, stored %d, pager-only %v) = %v; want %v", tt.d, tt.below, tt.stored, tt.pagerOnly, got, tt.want)
		}
	}
}
