module drpc-rs/tests/go

go 1.24

require (
	google.golang.org/protobuf v1.36.12
	storj.io/drpc v1.0.0
)

require github.com/zeebo/errs v1.2.2 // indirect
