package v1alpha1

// ConditionAccepted is the condition type every Herald object reports. It is True
// when the object is part of the configuration in force, and False with a reason
// and a message a person can act on when it is not (for example a pool that
// overlaps another); the last good configuration then stays in force.
const ConditionAccepted = "Accepted"
