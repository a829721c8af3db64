{{/* Names, labels and the pieces every workload shares. */}}

{{- define "mailintake.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailintake.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "fetcher"). */}}
{{- define "mailintake.componentName" -}}
{{- printf "%s-%s" (include "mailintake.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailintake.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailintake.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mailintake.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "mailintake.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mailintake
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{- define "mailintake.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* One service's values over serviceDefaults: (dict "root" $ "component" "fetcher"). */}}
{{- define "mailintake.serviceValues" -}}
{{- $service := index .root.Values.services .component -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy $service)) -}}
{{- end -}}

{{/* "true" when a secret of `secrets` has an existingSecret or a non-empty value. */}}
{{- define "mailintake.secretConfigured" -}}
{{- $secret := index .root.Values.secrets .secret | default dict -}}
{{- $given := false -}}
{{- range $key, $value := ($secret.values | default dict) -}}
{{- if $value -}}{{- $given = true -}}{{- end -}}
{{- end -}}
{{- if or $secret.existingSecret $given -}}true{{- end -}}
{{- end -}}

{{/* The Secret object that holds a secret of `secrets`: (dict "root" $ "secret" "database"). */}}
{{- define "mailintake.secretName" -}}
{{- $secret := index .root.Values.secrets .secret | default dict -}}
{{- if $secret.existingSecret -}}
{{- $secret.existingSecret -}}
{{- else -}}
{{- include "mailintake.componentName" (dict "root" .root "component" (kebabcase .secret)) -}}
{{- end -}}
{{- end -}}

{{/* The database secret is the one every service needs: stop early with a clear message. */}}
{{- define "mailintake.requireDatabaseSecret" -}}
{{- if not (include "mailintake.secretConfigured" (dict "root" . "secret" "database")) -}}
{{- fail "secrets.database: set existingSecret (a Secret with the key `url`) or values.url (postgresql+psycopg://...)" -}}
{{- end -}}
{{- end -}}

{{/* Topic entries of files/topics.yaml (written by scripts/render-kafka-topics). */}}
{{- define "mailintake.topics" -}}
{{- toYaml ((.Files.Get "files/topics.yaml" | fromYaml).topics | default list) -}}
{{- end -}}

{{/* Image and security context of any mailintake container: (dict "root" $ "values" $serviceValues). */}}
{{- define "mailintake.containerBasics" -}}
image: {{ include "mailintake.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{- define "mailintake.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSizeLimit }}
{{- end -}}

{{- define "mailintake.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
