{{/* The alert rule groups of the PrometheusRule (its spec.groups). Metric names:
porterlb's metrics reference (docs/); pool metrics come from the managers (every replica, so
`max by`), fenced from each speaker. */}}
{{- define "porterlb.alertGroups" -}}
{{- $rule := .Values.prometheus.prometheusRule -}}
- name: porterlb
  rules:
  {{- if $rule.addressPoolUsage.enabled }}
  {{- range $rule.addressPoolUsage.thresholds }}
    - alert: PorterlbAddressPoolUsage{{ .percent }}Percent
      expr: |-
        100 * max by (pool, family) (porterlb_pool_addresses_in_use)
          / max by (pool, family) (porterlb_pool_addresses > 0)
          > {{ .percent }}
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: {{ printf "Pool {{ $labels.pool }} ({{ $labels.family }}) is over %v%% used" .percent | quote }}
        description: {{ printf "{{ $value | humanize }}%% of the addresses of Eip {{ $labels.pool }} ({{ $labels.family }}) are allocated; new LoadBalancer Services get AllocationFailed once it is full." | quote }}
  {{- end }}
  {{- end }}
  {{- with $rule.addressPoolExhausted }}
  {{- if .enabled }}
    - alert: PorterlbAddressPoolExhausted
      expr: |-
        max by (pool, family) (porterlb_pool_addresses_in_use)
          >= max by (pool, family) (porterlb_pool_addresses > 0)
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: {{ "Pool {{ $labels.pool }} ({{ $labels.family }}) has no free address" | quote }}
        description: {{ "Every address of Eip {{ $labels.pool }} ({{ $labels.family }}) is allocated: new Services asking it stay pending with AllocationFailed. Widen the pool or add another." | quote }}
  {{- end }}
  {{- end }}
  {{- with $rule.speakerFenced }}
  {{- if .enabled }}
    - alert: PorterlbSpeakerFenced
      expr: porterlb_speaker_fenced > 0
      for: {{ .for }}
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: {{ "Speaker {{ $labels.pod }} has stopped answering ARP/NDP" | quote }}
        description: {{ "Speaker {{ $labels.pod }} has heard neither the API server nor a manager for too long and answers for none of its IPs: its node is cut off. Check the node's network and the managers." | quote }}
  {{- end }}
  {{- end }}
  {{- with $rule.silentNodes }}
  {{- if .enabled }}
    - alert: PorterlbSilentNodes
      expr: max(porterlb_heartbeat_silent_nodes) > 0
      for: {{ .for }}
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: {{ "{{ $value }} node(s) answer no heartbeat" | quote }}
        description: {{ printf "The speakers of {{ $value }} node(s) miss the managers' heartbeats (UDP port %v): their IPs moved to other nodes. Check the speaker pods and host firewalls; `porterlb status` names the nodes." $.Values.heartbeat.port | quote }}
  {{- end }}
  {{- end }}
  {{- with $rule.noLeader }}
  {{- if .enabled }}
    - alert: PorterlbNoLeader
      expr: sum(porterlb_manager_leader) < 1 or absent(porterlb_manager_leader)
      for: {{ .for }}
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: No porterlb manager leads
        description: {{ printf "No manager holds the %s Lease (or none is scraped): new Services get no IP and no IP moves off a failed node. Announced IPs keep being answered." (include "porterlb.leaseName" $) | quote }}
  {{- end }}
  {{- end }}
  {{- with $rule.eventsDropped }}
  {{- if .enabled }}
    - alert: PorterlbEventsDropped
      expr: increase(porterlb_events_dropped_total[5m]) > 0
      labels:
        {{- toYaml .labels | nindent 8 }}
      annotations:
        summary: {{ "{{ $labels.pod }} dropped Kubernetes Events" | quote }}
        description: {{ "{{ $labels.pod }} dropped Events because the API server took them slower than they came; Service status and conditions stay correct, only notices are lost." | quote }}
  {{- end }}
  {{- end }}
{{- end }}
