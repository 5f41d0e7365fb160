"""device_agent"""
