package auth

import "fmt"

// ParseError reports a line of a password file or ACL file that cannot be
// used. Load functions return it (as error) for the first such line.
type ParseError struct {
	File string // the path as given to the Load function
	Line int    // 1-based line number
	Err  error  // what is wrong; may wrap a cause such as topic.ErrInvalidFilter
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("auth: %s:%d: %v", e.File, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }
