{{/* The Ray pod templates of the RayService (head and worker groups). */}}

{{/* The Serve config KubeRay submits to the dashboard (PUT /api/serve/applications/): one
     application whose args are the platform config. */}}
{{- define "aprendiz.serveConfig" -}}
proxy_location: EveryNode
http_options:
  host: 0.0.0.0
  port: 8000
applications:
  - name: aprendiz
    route_prefix: /
    import_path: aprendiz.services.app:build_app
    args:
{{ include "aprendiz.platform" . | indent 6 }}
{{- end -}}

{{/* Environment of every Ray container. */}}
{{- define "aprendiz.rayEnv" -}}
{{ include "aprendiz.storageEnv" . }}
- name: APRENDIZ_METRICS_EXPORT_PORT
  value: "8080"
{{- /* The root filesystem is read-only: Ray's session and logs (/tmp/ray) and every cache under HOME
     (vLLM's, Triton's, Hugging Face's) go to the /tmp emptyDir. */}}
- name: HOME
  value: /tmp
{{- /* An idle cluster's own CPU: the values `aprendiz serve` sets for a local one (IDLE_ENV in
     src/aprendiz/cli/runner.py, where each is explained; docs/benchmarks.md measures them).
     ray.env can set any of them again. */}}
- name: RAY_SERVE_CONTROL_LOOP_INTERVAL_S
  value: "1"
- name: RAY_SERVE_METRICS_EXPORT_INTERVAL_MS
  value: "1000"
- name: RAY_prestart_worker_first_driver
  value: "0"
- name: RAY_num_workers_soft_limit
  value: "0"
- name: RAY_LOG_MONITOR_MANY_FILES_THRESHOLD
  value: "0"
- name: LOG_NAME_UPDATE_INTERVAL_S
  value: "2"
- name: REPORTER_UPDATE_INTERVAL_MS
  value: "15000"
{{- if .Values.ray.compileCache.existingClaim }}
{{- /* vLLM's compile cache on a volume that outlives the pod: a new engine loads the compiled model
     instead of compiling it again (the tiny CPU model: 16 s of its start here). */}}
- name: VLLM_CACHE_ROOT
  value: /var/cache/vllm
{{- end }}
{{- if eq .Values.ray.serveIngress "haproxy" }}
{{- /* Read by Serve in every process of every node: set on the head and the workers alike. */}}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
- name: RAY_SERVE_LOG_TO_STDERR
  value: "1"
{{- end }}
{{- range $name, $ref := .Values.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef: {name: {{ $ref.secretName }}, key: {{ $ref.key }}}
{{- end }}
{{- with .Values.ray.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes of every Ray pod: shared memory for the object store (its size and 256 MiB for the rest
     of /dev/shm), scratch for Ray's session, logs and caches, the gateway's keys. */}}
{{- define "aprendiz.rayVolumes" -}}
- name: dshm
  emptyDir: {medium: Memory, sizeLimit: {{ add .Values.ray.objectStoreBytes 268435456 | quote }}}
- name: tmp
  emptyDir: {sizeLimit: {{ .Values.ray.tmpSizeLimit }}}
{{- with .Values.ray.compileCache.existingClaim }}
- name: vllm-cache
  persistentVolumeClaim: {claimName: {{ . }}}
{{- end }}
- name: gateway-keys
  secret:
    secretName: {{ .Values.gatewayKeys.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.gatewayKeys.key }}
        path: {{ base (include "aprendiz.keysFile" .) }}
{{- end -}}

{{- define "aprendiz.rayVolumeMounts" -}}
- name: dshm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
{{- if .Values.ray.compileCache.existingClaim }}
- name: vllm-cache
  mountPath: /var/cache/vllm
{{- end }}
- name: gateway-keys
  mountPath: {{ dir (include "aprendiz.keysFile" .) }}
  readOnly: true
{{- end -}}

{{/* One worker group; call with (dict "root" $ "name" "cpu" "group" .Values.ray.cpuWorkers "image" .Values.images.cpu "gpus" 0). */}}
{{- define "aprendiz.workerGroup" -}}
{{- $root := .root -}}
{{- $group := .group -}}
- groupName: {{ .name }}
  replicas: {{ $group.replicas }}
  minReplicas: {{ $group.minReplicas }}
  maxReplicas: {{ $group.maxReplicas }}
  rayStartParams:
    metrics-export-port: "8080"
    object-store-memory: {{ $root.Values.ray.objectStoreBytes | int64 | quote }}
    {{- with $group.numCpus }}
    num-cpus: {{ . | quote }}
    {{- end }}
    {{- if .gpus }}
    num-gpus: {{ .gpus | quote }}
    {{- end }}
    {{- with $group.acceleratorType }}
    {{- /* The resource Ray gives a node with this GPU (accelerator_type:<type>), declared so that the
         autoscaler knows a worker it has not started yet has it: a replica asking for the type then
         starts one from zero. Ray's format: a JSON object, quoted and escaped once more for ray start. */}}
    resources: {{ dict (printf "accelerator_type:%s" .) 1 | toJson | toJson | squote }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "aprendiz.labels" (dict "root" $root "component" "ray") | nindent 8 }}
        aprendiz.dev/ray-node: worker
        aprendiz.dev/worker-group: {{ .name }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $root.Values.ray.terminationGracePeriodSeconds }}
      securityContext: {{- include "aprendiz.podSecurityContext" $root | nindent 8 }}
      {{- with $group.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ include "aprendiz.image" (dict "root" $root "image" .image) }}
          imagePullPolicy: {{ .image.pullPolicy }}
          securityContext: {{- include "aprendiz.rayContainerSecurityContext" $root | nindent 12 }}
          env: {{- include "aprendiz.rayEnv" $root | nindent 12 }}
          ports:
            - {name: serve, containerPort: 8000, protocol: TCP}
            - {name: metrics, containerPort: 8080, protocol: TCP}
          resources:
            requests:
              {{- toYaml $group.resources.requests | nindent 14 }}
              {{- if .gpus }}
              nvidia.com/gpu: {{ .gpus }}
              {{- end }}
            limits:
              {{- toYaml $group.resources.limits | nindent 14 }}
              {{- if .gpus }}
              nvidia.com/gpu: {{ .gpus }}
              {{- end }}
          # Ready when this node's Serve proxy answers; alive while its raylet does.
          readinessProbe:
            httpGet: {path: /-/healthz, port: 8000}
            initialDelaySeconds: 10
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 3
          livenessProbe:
            httpGet: {path: /api/local_raylet_healthz, port: 52365}
            initialDelaySeconds: 60
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 12
          lifecycle:
            preStop:
              # Stop taking new requests, let the ones in flight finish, then leave the cluster.
              exec:
                command: ["/bin/sh", "-c", "sleep 15 && ray stop"]
          volumeMounts: {{- include "aprendiz.rayVolumeMounts" $root | nindent 12 }}
      volumes: {{- include "aprendiz.rayVolumes" $root | nindent 8 }}
{{- end -}}
