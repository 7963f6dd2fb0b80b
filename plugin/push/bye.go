package push

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/deferpush/deferpush/plugin"
	"github.com/deferpush/deferpush/plugin/msrp"
)

// Steps 10–13 of the seed's Figure 2: the BYE that ends a push session.

// Close sends the BYE (steps 10–13) unless the client ended the dialog,
// and closes the MSRP session.
func (s *session) Close(ctx context.Context) error {
	err := s.byeCtx(ctx)
	if cerr := s.ms.Close(); err == nil && cerr != nil && !errors.Is(cerr, msrp.ErrClosed) {
		err = cerr
	}
	return err
}

func (s *session) bye() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.byeCtx(ctx)
}

func (s *session) byeCtx(ctx context.Context) error {
	defer s.dlg.close()
	if s.dlg.ended() {
		return nil
	}
	if err := s.p.sendBye(ctx, newInDialog(sip.BYE, s.dlg.invite, s.dlg.res)); err != nil {
		return &plugin.SessionError{Op: "bye", Err: err}
	}
	return nil
}
