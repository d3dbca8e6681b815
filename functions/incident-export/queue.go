package incidentexport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/defender-functions/defender-functions/shared/config"
	"github.com/defender-functions/defender-functions/shared/function"
)

// TenantFunction is incident-export-tenant. With EXPORT_QUEUE set, the
// timer only enqueues one message per tenant, and this function exports
// the tenant a message names. The platform's queue is the distributed
// engine: as many instances as it scales to drain it, a failed tenant is
// delivered again, and one that keeps failing lands in the poison (Azure)
// or dead-letter (SQS) queue without holding back the others. The
// checkpoint's optimistic concurrency is the lease: of two invocations for
// one tenant, one stops without writing.
var TenantFunction = function.Descriptor{
	Name:     "incident-export-tenant",
	Queue:    &function.QueueBinding{Queue: "%" + config.EnvExportQueue + "%", Connection: config.EnvStorage},
	Roles:    Function.Roles,
	Settings: config.ExportSettings,
}

// Queue is where the timer sends its tenants' tasks.
type Queue interface {
	Send(ctx context.Context, bodies [][]byte) error
}

// Task is a queue message: one tenant to export.
type Task struct {
	Tenant string `json:"tenant"`
	// Round is when the timer run that sent it was due; continuations
	// keep it, so a log line says how far behind a tenant is.
	Round time.Time `json:"round"`
	// Continued counts the invocations before this one that ran out of
	// time on the tenant's backlog.
	Continued int `json:"continued,omitempty"`
}

// maxTask bounds a message's size: a task is a tenant's name and two fields.
const maxTask = 4 << 10

// enqueue sends one task per tenant.
func (e *Exporter) enqueue(ctx context.Context, t function.Timer) error {
	bodies := make([][]byte, len(e.Tenants))
	for i, tn := range e.Tenants {
		bodies[i], _ = json.Marshal(Task{Tenant: tn.Name, Round: t.ScheduledTime.UTC()})
	}
	if err := e.Queue.Send(ctx, bodies); err != nil {
		return err
	}
	function.Logger(ctx).Info("Incident export enqueued.", "tenants", len(bodies), "queue", fmt.Sprint(e.Queue), "past_due", t.PastDue)
	return nil
}

// ParseTask reads a queue message; it refuses what is not a task for one
// of the tenants configured, naming what is wrong.
func (e *Exporter) ParseTask(body []byte) (Task, Tenant, error) {
	var task Task
	if len(body) > maxTask {
		return task, Tenant{}, fmt.Errorf("the message is %d bytes; a task is at most %d", len(body), maxTask)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&task); err != nil {
		return task, Tenant{}, fmt.Errorf("the message is not a task ({\"tenant\": …, \"round\": …}): %w", err)
	}
	for _, tn := range e.Tenants {
		if tn.Name == task.Tenant {
			return task, tn, nil
		}
	}
	return task, Tenant{}, fmt.Errorf("the message names tenant %q, which is not in %s", task.Tenant, config.EnvTenantID)
}

// Export runs the task a queue message holds: one tenant, bounded by
// MaxRun. A tenant whose backlog does not fit is continued by a new task
// at the back of the queue, so the others get their turn first. An error
// leaves the message to the platform: delivered again, and past its
// maximum moved to the poison or dead-letter queue, which the log line of
// the last attempt says.
func (e *Exporter) Export(ctx context.Context, m function.Message) error {
	log := function.Logger(ctx)
	task, tn, err := e.ParseTask(m.Body)
	if err != nil {
		log.Error("Queue message refused.", "message", m.ID, "err", err)
		return err
	}
	o := e.runs(ctx, []Tenant{tn})[0]
	switch err := o.err; {
	case errors.Is(err, ErrConcurrentRun):
		// Another invocation holds the tenant and will finish it.
		return nil
	case err != nil && m.LastAttempt:
		log.Error("Tenant export failed on the message's last delivery; the platform moves it to the poison or dead-letter queue.",
			"tenant", tn.Name, "deliveries", m.DequeueCount, "round", task.Round, "err", err)
		return err
	case err != nil:
		return err
	case !o.run.caughtUp && e.Queue != nil:
		task.Continued++
		b, _ := json.Marshal(task)
		if err := e.Queue.Send(context.WithoutCancel(ctx), [][]byte{b}); err != nil {
			// The next round's task continues instead.
			log.Warn("Could not enqueue the tenant's continuation; the next round continues.", "tenant", tn.Name, "err", err)
			return nil
		}
		log.Info("Tenant continued at the back of the queue.", "tenant", tn.Name, "continued", task.Continued, "round", task.Round)
	}
	return nil
}
