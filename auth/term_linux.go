package auth

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// noEcho turns off echo on the terminal f while a password is typed. It
// fails (and changes nothing) when f is not a terminal. The returned
// function restores the terminal; an interrupt or termination signal
// arriving before then restores it too and is then delivered as usual.
func noEcho(f *os.File) (restore func() error, err error) {
	fd := f.Fd()
	var old syscall.Termios
	if err := ioctlTermios(fd, syscall.TCGETS, &old); err != nil {
		return nil, err
	}
	quiet := old
	quiet.Lflag &^= syscall.ECHO
	quiet.Lflag |= syscall.ICANON | syscall.ISIG
	if err := ioctlTermios(fd, syscall.TCSETS, &quiet); err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 1)
	done := make(chan struct{})
	exited := make(chan struct{})
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer close(exited)
		select {
		case s := <-sigs:
			// Best effort: the process is about to end.
			_ = ioctlTermios(fd, syscall.TCSETS, &old)
			signal.Stop(sigs)
			if p, err := os.FindProcess(os.Getpid()); err == nil {
				_ = p.Signal(s)
			}
		case <-done:
		}
	}()
	return func() error {
		close(done)
		<-exited
		signal.Stop(sigs)
		return ioctlTermios(fd, syscall.TCSETS, &old)
	}, nil
}

func ioctlTermios(fd uintptr, req uintptr, t *syscall.Termios) error {
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(t)))
	if errno != 0 {
		return errno
	}
	return nil
}
