module drpc-rs/tests/go

go 1.25

require (
	github.com/golang/snappy v1.0.0
	github.com/minio/minlz v1.2.4
	google.golang.org/protobuf v1.36.12
	storj.io/drpc v1.0.0
)

require (
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/zeebo/errs v1.2.2 // indirect
)
