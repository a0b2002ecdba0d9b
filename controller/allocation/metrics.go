package allocation

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/heraldlb/herald/api/v1alpha1"
	"github.com/heraldlb/herald/controller/ipam"
)

var (
	allocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_controller_allocations_total",
		Help: "Allocation decisions by result: IPAllocated, or the reason it failed.",
	}, []string{"result"})
	statusWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_controller_service_status_writes_total",
		Help: "Writes of Service status by the controller.",
	})
	poolAddresses = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_pool_addresses",
		Help: "Addresses of a pool by family and state (assigned, available; available saturates at 2^63-1).",
	}, []string{"pool", "family", "state"})
	ipModeGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_controller_ip_mode",
		Help: "The ipMode the controller writes on ingress entries: 1 for the mode in force (VIP or Proxy), 0 for the other.",
	}, []string{"mode"})
)

func init() {
	metrics.Registry.MustRegister(allocations, statusWrites, poolAddresses, ipModeGauge)
}

func observeAllocation(err error) {
	result := v1alpha1.ReasonIPAllocated
	var ae *ipam.AllocationError
	if errors.As(err, &ae) {
		result = string(ae.Reason)
	} else if err != nil {
		result = "Error"
	}
	allocations.WithLabelValues(result).Inc()
}

func countWrite() { statusWrites.Inc() }

func setPoolGauges(pool string, st *v1alpha1.IPAddressPoolStatus) {
	poolAddresses.WithLabelValues(pool, "IPv4", "assigned").Set(float64(st.AssignedIPv4))
	poolAddresses.WithLabelValues(pool, "IPv4", "available").Set(float64(st.AvailableIPv4))
	poolAddresses.WithLabelValues(pool, "IPv6", "assigned").Set(float64(st.AssignedIPv6))
	poolAddresses.WithLabelValues(pool, "IPv6", "available").Set(float64(st.AvailableIPv6))
}

func setIPModeGauge(mode corev1.LoadBalancerIPMode) {
	for _, m := range []corev1.LoadBalancerIPMode{corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy} {
		v := 0.0
		if m == mode {
			v = 1
		}
		ipModeGauge.WithLabelValues(string(m)).Set(v)
	}
}
