package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// checkStorePath returns an error that says why the server could not keep
// its database at path, or nil: a directory that does not exist or is not
// a directory, a directory it cannot write (SQLite creates the database
// there, and its -wal and -shm files beside it), a path that is a directory,
// or a file it cannot write. SQLite alone would say "unable to open database
// file (14)" for most of them, or nothing at all for a read-only file until
// the first write.
func checkStorePath(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	// The only portable test of whether a directory can be written to is
	// to write to it.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable (%v): SQLite creates the database, and its -wal and -shm files, there", dir, cause(err))
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return err
	}

	fi, err = os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // the open creates it
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s is not writable (%v)", path, cause(err))
	}
	return f.Close()
}

// cause returns the error of the system call behind err, such as
// "permission denied" or "read-only file system", without the path that the
// message names already.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
