{{/* The pod of one training run; call with (dict "root" $ "model" "breast-cancer"). */}}
{{- define "aprendiz.trainingPod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "aprendiz.labels" (dict "root" $root "component" "training") | nindent 4 }}
    aprendiz.dev/model: {{ .model }}
spec:
  serviceAccountName: {{ include "aprendiz.trainingServiceAccount" $root }}
  automountServiceAccountToken: false
  restartPolicy: Never
  securityContext: {{- include "aprendiz.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.training.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.training.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  initContainers:
    # The store answers (and, with the in-chart MinIO, its bucket exists) before training starts.
    - name: store-ready
      image: {{ include "aprendiz.image" (dict "root" $root "image" $root.Values.images.training) }}
      imagePullPolicy: {{ $root.Values.images.training.pullPolicy }}
      command: ["python", "/etc/aprendiz/scripts/store_check.py", "--config", "/etc/aprendiz/config/aprendiz.yaml",
                "--timeout", "600"{{ if $root.Values.storage.minio.enabled }}, "--create-bucket"{{ end }}]
      env: {{- include "aprendiz.storageEnv" $root | nindent 8 }}
      securityContext:
        {{- include "aprendiz.containerSecurityContext" $root | nindent 8 }}
        readOnlyRootFilesystem: true
      resources:
        requests: {cpu: 50m, memory: 128Mi}
        limits: {cpu: 500m, memory: 512Mi}
      volumeMounts:
        - {name: config, mountPath: /etc/aprendiz/config, readOnly: true}
        - {name: scripts, mountPath: /etc/aprendiz/scripts, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  containers:
    - name: train
      image: {{ include "aprendiz.image" (dict "root" $root "image" $root.Values.images.training) }}
      imagePullPolicy: {{ $root.Values.images.training.pullPolicy }}
      command: ["aprendiz", "train", "--model", {{ .model | quote }}, "--config", "/etc/aprendiz/config/aprendiz.yaml"
                {{- with $root.Values.training.pushgateway }}, "--pushgateway", {{ . | quote }}{{ end }}]
      env:
        {{- include "aprendiz.storageEnv" $root | nindent 8 }}
        # A read-only root file system: caches and plots go to /tmp.
        - {name: HOME, value: /tmp}
        - {name: MPLCONFIGDIR, value: /tmp/matplotlib}
      securityContext:
        {{- include "aprendiz.containerSecurityContext" $root | nindent 8 }}
        readOnlyRootFilesystem: true
      resources: {{- toYaml $root.Values.training.resources | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/aprendiz/config, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: config
      configMap: {name: {{ include "aprendiz.fullname" $root }}-config}
    - name: scripts
      configMap: {name: {{ include "aprendiz.fullname" $root }}-scripts, defaultMode: 0555}
    - name: tmp
      emptyDir: {sizeLimit: 4Gi}
{{- end -}}

{{- define "aprendiz.trainingServiceAccount" -}}
{{- if .Values.training.serviceAccount.create -}}
{{- default (printf "%s-training" (include "aprendiz.fullname" .)) .Values.training.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.training.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* CronJob/Job name of one model's training: CronJob names hold at most 52 characters. */}}
{{- define "aprendiz.trainingName" -}}
{{- printf "%s-train-%s" (include "aprendiz.fullname" .root) .model | trunc 52 | trimSuffix "-" | trimSuffix "." -}}
{{- end -}}

{{/* A pod of a training RayJob's cluster (the head or a worker): the training image, the platform
     config, scratch and shared memory; call with (dict "root" $ "container" "ray-head" "resources" ...). */}}
{{- define "aprendiz.trainingRayPod" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "aprendiz.labels" (dict "root" $root "component" "training") | nindent 4 }}
spec:
  serviceAccountName: {{ include "aprendiz.trainingServiceAccount" $root }}
  automountServiceAccountToken: false
  securityContext: {{- include "aprendiz.podSecurityContext" $root | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.training.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.training.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ include "aprendiz.image" (dict "root" $root "image" $root.Values.images.training) }}
      imagePullPolicy: {{ $root.Values.images.training.pullPolicy }}
      env:
        {{- include "aprendiz.storageEnv" $root | nindent 8 }}
        - {name: HOME, value: /tmp}
        - {name: MPLCONFIGDIR, value: /tmp/matplotlib}
      securityContext:
        {{- include "aprendiz.containerSecurityContext" $root | nindent 8 }}
        readOnlyRootFilesystem: true
      resources: {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/aprendiz/config, readOnly: true}
        - {name: tmp, mountPath: /tmp}
        - {name: dshm, mountPath: /dev/shm}
  volumes:
    - name: config
      configMap: {name: {{ include "aprendiz.fullname" $root }}-config}
    - name: tmp
      emptyDir: {sizeLimit: 4Gi}
    - name: dshm
      emptyDir: {medium: Memory, sizeLimit: {{ add $root.Values.training.rayJob.objectStoreBytes 268435456 | quote }}}
{{- end -}}
