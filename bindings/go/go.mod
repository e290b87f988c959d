module drpc-rs/bindings/go

go 1.25

require (
	drpc-rs/tests/go v0.0.0-00010101000000-000000000000
	google.golang.org/protobuf v1.36.12
	storj.io/drpc v1.0.0
)

require github.com/zeebo/errs v1.2.2 // indirect

replace drpc-rs/tests/go => ../../tests/go
