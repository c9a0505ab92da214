package mem_test

import (
	"testing"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
	"github.com/mqttd/mqttd/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return mem.New() })
}
