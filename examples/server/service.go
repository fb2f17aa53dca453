package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/drainkit/drainkit/examples/demopb"
)

// demoService implements drainkit.demo.v1.Demo.
type demoService struct {
	demopb.UnimplementedDemoServer

	db       *sql.DB
	stubborn bool // Sleep ignores its context
}

func (s *demoService) Echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(in.GetValue()), nil
}

func (s *demoService) Sleep(ctx context.Context, in *durationpb.Duration) (*emptypb.Empty, error) {
	if err := in.CheckValid(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "duration: %v", err)
	}
	d := in.AsDuration()
	if d < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "duration %v is negative", d)
	}
	if s.stubborn {
		// Deliberately deaf to cancellation: this is what a drain's forced
		// stop is for.
		time.Sleep(d)
		return &emptypb.Empty{}, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return &emptypb.Empty{}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Chat echoes back each value it receives until the client closes its side.
// It waits in Recv between messages, so only a cancellation that ends the
// stream itself, as the Tracker's does, ends it during a drain.
func (s *demoService) Chat(stream grpc.BidiStreamingServer[wrapperspb.StringValue, wrapperspb.StringValue]) error {
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(wrapperspb.String(in.GetValue())); err != nil {
			return err
		}
	}
}

// Append returns the id only once the row is committed: with the store's
// synchronous=FULL, an acknowledged value survives the process and the
// machine.
func (s *demoService) Append(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO entries (value) VALUES (?) RETURNING id`, in.GetValue()).Scan(&id)
	if err != nil {
		return nil, storeError(ctx, "append", err)
	}
	return wrapperspb.Int64(id), nil
}

func (s *demoService) Get(ctx context.Context, in *wrapperspb.Int64Value) (*wrapperspb.StringValue, error) {
	if in.GetValue() < 1 {
		return nil, status.Errorf(codes.InvalidArgument, "id %d: ids start at 1", in.GetValue())
	}
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM entries WHERE id = ?`, in.GetValue()).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, status.Errorf(codes.NotFound, "no value with id %d", in.GetValue())
	}
	if err != nil {
		return nil, storeError(ctx, "get", err)
	}
	return wrapperspb.String(v), nil
}

// storeError turns an error of the store into a status: the context's code
// when the call was cancelled or timed out; INVALID_ARGUMENT when SQLite
// refused the value itself (a constraint, a type, a size); INTERNAL
// otherwise, for a failed write or read. Never UNAVAILABLE: that code tells
// clients to retry elsewhere, which fixes none of these, and the Tracker
// keeps it for the drain.
func storeError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_RANGE:
			return status.Errorf(codes.InvalidArgument, "%s: %v", op, err)
		}
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// openStore opens, creating it if needed, the SQLite database at path, in
// WAL mode with synchronous=FULL so that every committed transaction is on
// disk before the commit returns.
//
// It returns an error naming path and what is wrong when the server could
// not write the database: a missing directory, a read-only file, and so on.
func openStore(ctx context.Context, path string) (*sql.DB, error) {
	if err := checkStorePath(path); err != nil {
		return nil, fmt.Errorf("-db %s: %w", path, err)
	}
	dsn := path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("-db %s: %w", path, err)
	}
	if err := initStore(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("-db %s: %w", path, err)
	}
	return db, nil
}

func initStore(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want \"wal\"", mode)
	}
	var sync int
	if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return err
	}
	if sync < 2 { // 2 is FULL
		return fmt.Errorf("synchronous is %d, want 2 (FULL)", sync)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS entries (
		id    INTEGER PRIMARY KEY AUTOINCREMENT,
		value TEXT NOT NULL
	)`); err != nil {
		return err
	}
	// A committed write at every start, so that a database the server
	// cannot write fails here, before it serves, and not at the first
	// Append: CREATE TABLE IF NOT EXISTS writes nothing once the table is
	// there.
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, storeVersion)); err != nil {
		return fmt.Errorf("cannot write the database: %w", err)
	}
	return nil
}

// storeVersion is the version of the store's schema, kept in SQLite's
// user_version.
const storeVersion = 1
