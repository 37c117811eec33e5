// A pure Go program (built with CGO_ENABLED=0: static, no libc) that keeps 64 MiB on its Go
// heap and prints how much: ground truth for tracing Go without probing it.
package main

import (
	"fmt"
	"os"
)

var keep [][]byte

func main() {
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 1<<20))
	}
	fmt.Printf("kept %d MiB\n", len(keep))
	os.Exit(0)
}
