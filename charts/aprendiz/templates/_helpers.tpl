{{/* Names, labels, images and the effective platform config shared by every template. */}}

{{- define "aprendiz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<name>, or the release name when it already contains the name; at most 40 characters
     so that suffixed names (KubeRay appends its own) stay within Kubernetes' limits. */}}
{{- define "aprendiz.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "aprendiz.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aprendiz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aprendiz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The standard labels; call with (dict "root" $ "component" "ray"). */}}
{{- define "aprendiz.labels" -}}
{{- $root := .root -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aprendiz.selectorLabels" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: aprendiz
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector of one component's pods; call with (dict "root" $ "component" "ray"). */}}
{{- define "aprendiz.componentSelector" -}}
{{ include "aprendiz.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag of images.<kind>; call with (dict "root" $ "image" .Values.images.cpu). */}}
{{- define "aprendiz.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "aprendiz.minioName" -}}
{{- printf "%s-minio" (include "aprendiz.fullname" .) -}}
{{- end -}}

{{/* The Secret with the S3 credentials, or "" when none is configured. */}}
{{- define "aprendiz.storageSecret" -}}
{{- if .Values.storage.existingSecret -}}
{{- .Values.storage.existingSecret -}}
{{- else if .Values.storage.minio.enabled -}}
{{- default (include "aprendiz.minioName" .) .Values.storage.minio.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The platform config as rendered: values.platform, with the in-chart MinIO as the store's
     endpoint when it is enabled and no endpoint is set, and the gateway's keys file always set
     (the keys Secret is always mounted: no release serves without API keys). One source for the Serve application's
     args and the training jobs' config file. */}}
{{- define "aprendiz.platform" -}}
{{- $platform := deepCopy .Values.platform -}}
{{- if .Values.storage.minio.enabled -}}
{{- $store := default dict $platform.store -}}
{{- if not $store.endpoint_url -}}
{{- $_ := set $store "endpoint_url" (printf "http://%s:9000" (include "aprendiz.minioName" .)) -}}
{{- end -}}
{{- $_ := set $platform "store" $store -}}
{{- end -}}
{{- $gateway := default dict $platform.gateway -}}
{{- $_ := set $gateway "keys_file" (include "aprendiz.keysFile" .) -}}
{{- $_ := set $platform "gateway" $gateway -}}
{{- toYaml $platform -}}
{{- end -}}

{{/* Where the gateway reads its keys file in the Ray pods. */}}
{{- define "aprendiz.keysFile" -}}
{{- $gateway := default dict .Values.platform.gateway -}}
{{- default "/etc/aprendiz/keys/keys.yaml" $gateway.keys_file -}}
{{- end -}}

{{/* The classifiers the training CronJobs run for. */}}
{{- define "aprendiz.trainingModels" -}}
{{- $models := .Values.training.models -}}
{{- if not $models -}}
{{- $models = list -}}
{{- range .Values.platform.classifiers -}}
{{- $models = append $models .name -}}
{{- end -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level; uid/gid 1000/100 are the Ray images' `ray` user. */}}
{{- define "aprendiz.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level. */}}
{{- define "aprendiz.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A Ray container: restricted, and its root filesystem read-only (Ray writes to /tmp, an emptyDir). */}}
{{- define "aprendiz.rayContainerSecurityContext" -}}
{{ include "aprendiz.containerSecurityContext" . }}
readOnlyRootFilesystem: true
{{- end -}}

{{/* S3 credentials and region as the standard AWS variables. */}}
{{- define "aprendiz.storageEnv" -}}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.storage.region | quote }}
{{- with (include "aprendiz.storageSecret" .) }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $.Values.storage.accessKeyIdKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: {{ $.Values.storage.secretAccessKeyKey }}}
{{- end }}
{{- end -}}

{{/* Fail the render, readably, on values the schema cannot express. */}}
{{- define "aprendiz.validate" -}}
{{- if not .Values.gatewayKeys.existingSecret -}}
{{- fail "gatewayKeys.existingSecret is required: name a Secret holding the gateway's API keys file (key gatewayKeys.key, default keys.yaml), e.g. kubectl create secret generic aprendiz-keys --from-file=keys.yaml" -}}
{{- end -}}
{{- range (default list .Values.platform.rented) -}}
{{- if and .api_key_env (not (hasKey $.Values.secretEnv .api_key_env)) -}}
{{- fail (printf "rented model %q reads its API key from $%s: add secretEnv.%s: {secretName: ..., key: ...}" .id .api_key_env .api_key_env) -}}
{{- end -}}
{{- end -}}
{{- /* Every accelerator: gpu model (generator or classifier) needs the GPU worker group, and one that names
     an accelerator_type needs the group to advertise it: a worker not started yet is known to the
     autoscaler only by what the group declares, so it would never start one from zero. */ -}}
{{- $gpuModels := list -}}
{{- range .Values.platform.generators -}}
{{- if eq (default "cpu" .accelerator) "gpu" -}}{{- $gpuModels = append $gpuModels (dict "what" (printf "generator %q" .id) "type" .accelerator_type) -}}{{- end -}}
{{- end -}}
{{- range .Values.platform.classifiers -}}
{{- if eq (default "cpu" .accelerator) "gpu" -}}{{- $gpuModels = append $gpuModels (dict "what" (printf "classifier %q" .name) "type" .accelerator_type) -}}{{- end -}}
{{- end -}}
{{- if and $gpuModels (not .Values.ray.gpuWorkers.enabled) -}}
{{- fail (printf "%s has accelerator: gpu but ray.gpuWorkers.enabled is false: it could never be scheduled" (first $gpuModels).what) -}}
{{- end -}}
{{- $workersType := default "" .Values.ray.gpuWorkers.acceleratorType -}}
{{- range $gpuModels -}}
{{- if and .type (ne .type $workersType) -}}
{{- fail (printf "%s asks for accelerator_type %s but ray.gpuWorkers.acceleratorType is %q: the autoscaler could not tell that a GPU worker has one, so none would start for it; set ray.gpuWorkers.acceleratorType: %s (with a node selector for those GPUs)" .what .type $workersType .type) -}}
{{- end -}}
{{- end -}}
{{- if not (or .Values.ray.cpuWorkers.enabled .Values.ray.gpuWorkers.enabled) -}}
{{- fail "ray.cpuWorkers and ray.gpuWorkers are both disabled: the head runs no replica (num-cpus 0), so nothing could serve" -}}
{{- end -}}
{{- if and .Values.monitoring.podMonitor.enabled .Values.monitoring.serviceMonitor.enabled -}}
{{- fail "monitoring.podMonitor and monitoring.serviceMonitor are both enabled: Ray's metrics would be scraped twice; enable one" -}}
{{- end -}}
{{- if and .Values.storage.minio.enabled .Values.storage.existingSecret .Values.storage.minio.existingSecret (ne .Values.storage.existingSecret .Values.storage.minio.existingSecret) -}}
{{- fail "storage.existingSecret and storage.minio.existingSecret differ: the platform would not hold MinIO's credentials" -}}
{{- end -}}
{{- end -}}
