package modem

import "time"

// SetTakenHook makes every device owner call f with its modem's name when
// it has taken an incoming message or a status report off the modem, before
// handing it to the scheduler. Set it before the pool runs; the returned
// function restores the previous hook (call it after the pool stopped).
func SetTakenHook(f func(modem string)) (restore func()) {
	old := testHookTaken
	testHookTaken = f
	return func() { testHookTaken = old }
}

// SetBudgetWindow shortens the span max_per_minute counts over (a minute)
// for a test; the returned function restores it. Set it before the pool
// runs.
func SetBudgetWindow(d time.Duration) (restore func()) {
	old := budgetWindow
	budgetWindow = d
	return func() { budgetWindow = old }
}
